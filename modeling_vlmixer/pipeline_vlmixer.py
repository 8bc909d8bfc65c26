"""VLMixer pipelines: zero-shot image classification and visual question answering.

This file ships with a saved VLMixer folder as Hugging Face remote code (it imports only torch, numpy, transformers
and the standard library at module level; PIL inside functions), so that someone who never installed this package runs

```python
from transformers import pipeline

classifier = pipeline("zero-shot-image-classification", model="org/vlmixer-small", trust_remote_code=True)
classifier("shoe.png", candidate_labels=["sneaker", "bag", "dress"])  # [{"score": 0.93, "label": "sneaker"}, ...]

vqa = pipeline("visual-question-answering", model="org/vlmixer-vqa", trust_remote_code=True)
vqa(image="shoe.png", question="what is this?", top_k=3)  # [{"score": 0.81, "answer": "shoe"}, ...]
```

`pipeline(task, model=folder, trust_remote_code=True)` reads the folder's `config.json`: a task listed in its
`custom_pipelines` is served by the class named there (`"pipeline_vlmixer.<Class>"`, loaded from this file in the
folder) before transformers looks at its own tasks. That is how a folder answers to the built-in
`zero-shot-image-classification` name and to `visual-question-answering`, which transformers v5 removed from its own
pipelines. `save_pipelines(folder)` writes that entry and copies this file; `register_pipelines()` registers the
classes with `transformers.pipelines.PIPELINE_REGISTRY` for in-process use with a model object.

Images (a PIL image, a path or URL, or an (H, W) / (H, W, C) uint8 array) go through the processor's image processor
and the model's built-in frozen backbone (EfficientNet-Lite0) as one visual token: the whole image with box
(0, 0, 1, 1), the way the model was evaluated zero-shot.
"""

import json
import os
import shutil

import numpy as np
import torch
from torch.nn import functional as F

from transformers.pipelines.base import Pipeline


IMAGE_MARKER = "<image>"  # where the processor puts an image's visual token in a text
WHOLE_IMAGE_BOX = [0.0, 0.0, 1.0, 1.0]
MAX_LOGIT_SCALE = 4.6052  # ln(100): the bound the model applies to its learnt inverse temperature
PIPELINE_FILE = "pipeline_vlmixer.py"
CONFIG_NAME = "config.json"


def as_rgb_image(image, timeout: float | None = None):
    """A PIL RGB image from a PIL image, a local path or URL (`transformers.image_utils.load_image`), or an
    (H, W) / (H, W, 3|4) array (uint8, or floats in [0, 1])."""
    from PIL import Image

    if isinstance(image, str):
        from transformers.image_utils import load_image

        image = load_image(image, timeout=timeout)
    elif isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3) or image.size == 0:
            raise ValueError(f"An image array must be (H, W) or (H, W, C) and non-empty, got shape {image.shape}.")
        if image.dtype != np.uint8:
            if image.min() < 0 or image.max() > 1:
                raise ValueError("A non-uint8 image array must hold values in [0, 1].")
            image = (image * 255).round().astype(np.uint8)
        image = Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"An image must be a PIL image, a path or URL, or an array; got {type(image).__name__}.")
    if image.width == 0 or image.height == 0:
        raise ValueError(f"Image has a zero-size dimension: {image.size}.")
    return image.convert("RGB")


class VLMixerPipelineMixin:
    """What both VLMixer pipelines share: the `VLMixerProcessor` (loaded with the model), images, and saving."""

    # `pipeline()` loads the folder's AutoProcessor (tokenizer, image processor, vocabulary) and nothing else.
    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False

    def _run(self, inputs, kwargs):
        """Pipeline.__call__ one input at a time: the inputs (prompts of different lengths, label lists) do not pad
        into batches, so `batch_size` is accepted and ignored (the label prompts are embedded once and cached)."""
        kwargs.pop("batch_size", None)
        self._batch_size = None
        return Pipeline.__call__(self, inputs, **kwargs)

    def _check_processor(self):
        if self.processor is None or not hasattr(self.processor, "encode_image_text"):
            raise ValueError(
                f"{type(self).__name__} needs the model's VLMixerProcessor: pass `processor=` (AutoProcessor of the "
                "same folder) or load the pipeline from a folder that holds one."
            )

    def _image_inputs(self, image, text: str, timeout=None) -> dict:
        """`text` holding one `<image>` marker, filled with the whole image as one visual token."""
        image = as_rgb_image(image, timeout=timeout)
        batch = self.processor(text=[text], images=[image], boxes=[[WHOLE_IMAGE_BOX]], return_tensors="pt")
        inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "pixel_values", "visual_boxes")}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    def save_pretrained(self, save_directory, **kwargs):
        """Saves the model, the processor (with its vocabulary and gallery), this file and the `custom_pipelines` entry."""
        os.makedirs(save_directory, exist_ok=True)
        self.model.save_pretrained(save_directory, **kwargs)
        self.processor.save_pretrained(save_directory, **kwargs)
        save_pipelines(save_directory, tasks=[self.task] if self.task in PIPELINES else None)


# ---------------------------------------------------------------------------------------------- zero-shot


class VLMixerZeroShotImageClassificationPipeline(VLMixerPipelineMixin, Pipeline):
    """
    Zero-shot image classification with a pre-trained VLMixer (`VLMixerForPreTraining`), as CLIP's pipeline does it:
    the image enters the prompt as a visual token ("a photo of a <image>."), each candidate label the same prompt with
    its name ("a photo of a sneaker."); the scores are the softmax, at the model's learnt temperature, of the cosine
    similarities of their contrastive sentence embeddings.

    When the processor's concept vocabulary knows a label, its prompt is the average over the label's surface forms
    ("trouser", "trousers", "jeans", ...), as in the model's zero-shot evaluation; `use_concept_forms=False` uses the
    label alone.

    Example:

    ```python
    >>> classifier = pipeline("zero-shot-image-classification", model="org/vlmixer-small", trust_remote_code=True)
    >>> classifier(image, candidate_labels=["sneaker", "bag", "dress"], hypothesis_template="a photo of a {}.")
    [{'score': 0.93, 'label': 'sneaker'}, {'score': 0.05, 'label': 'bag'}, {'score': 0.02, 'label': 'dress'}]
    ```
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_processor()
        if not hasattr(self.model, "sentence_embeddings") or not hasattr(self.model, "contrastive"):
            raise ValueError(
                f"{type(self.model).__name__} has no contrastive head; zero-shot classification needs the pre-training "
                "model (AutoModelForPreTraining)."
            )
        self._label_cache = {}

    def __call__(self, image=None, candidate_labels=None, **kwargs):
        """
        Args:
            image: a PIL image, a path or URL, an (H, W) / (H, W, C) array, or a list of those.
            candidate_labels (`list[str]`): the classes.
            hypothesis_template (`str`, defaults to `"a photo of a {}."`): the prompt; `{}` is the label for the
                classes and the image's visual token for the image.
            use_concept_forms (`bool`, defaults to `True`): average each label known to the concept vocabulary over
                its surface forms.
            timeout (`float`, *optional*): for images given as URLs.

        Returns: per image, a list of `{"score", "label"}` for every candidate label, the highest score first; the
        scores sum to 1.
        """
        if "images" in kwargs:
            image = kwargs.pop("images")
        if image is None:
            raise ValueError("Pass an image (or a list of images) to classify.")
        if not candidate_labels:
            raise ValueError("Pass `candidate_labels`, the list of classes to choose from.")
        if isinstance(candidate_labels, str):
            candidate_labels = [label.strip() for label in candidate_labels.split(",")]
        return self._run(image, {**kwargs, "candidate_labels": list(candidate_labels)})

    def _sanitize_parameters(self, candidate_labels=None, hypothesis_template=None, use_concept_forms=None, timeout=None, **kwargs):
        if kwargs:
            raise TypeError(f"Unexpected arguments: {sorted(kwargs)}.")
        preprocess = {"candidate_labels": candidate_labels, "hypothesis_template": hypothesis_template, "timeout": timeout}
        preprocess = {key: value for key, value in preprocess.items() if value is not None}
        forward = {} if use_concept_forms is None else {"use_concept_forms": use_concept_forms}
        return preprocess, forward, {}

    def preprocess(self, image, candidate_labels=None, hypothesis_template="a photo of a {}.", timeout=None):
        if hypothesis_template.count("{}") != 1 or IMAGE_MARKER in hypothesis_template:
            raise ValueError(f"`hypothesis_template` must hold exactly one '{{}}' (and no {IMAGE_MARKER}), got {hypothesis_template!r}.")
        inputs = self._image_inputs(image, hypothesis_template.format(IMAGE_MARKER), timeout)
        inputs["candidate_labels"] = candidate_labels
        inputs["hypothesis_template"] = hypothesis_template
        return inputs

    def label_forms(self, label: str, use_concept_forms: bool = True) -> list[str]:
        """The names a label is prompted with: the label, then its concept's other surface forms when known."""
        vocabulary = getattr(self.processor, "vocabulary", None)
        if not use_concept_forms or vocabulary is None or label not in vocabulary:
            return [label]
        return list(dict.fromkeys([label, *vocabulary.forms(label)]))

    @torch.no_grad()
    def label_embeddings(self, candidate_labels, hypothesis_template: str, use_concept_forms: bool = True) -> torch.Tensor:
        """(labels, projection_dim) unit embeddings of the class prompts (cached for the last label set)."""
        key = (tuple(candidate_labels), hypothesis_template, use_concept_forms)
        if key not in self._label_cache:
            forms = [self.label_forms(label, use_concept_forms) for label in candidate_labels]
            prompts = [hypothesis_template.format(form) for label_forms in forms for form in label_forms]
            batch = self.processor(text=prompts, cmc_ratio=0.0, return_tensors="pt")
            embeddings = self.model.sentence_embeddings(
                input_ids=batch["input_ids"].to(self.device), attention_mask=batch["attention_mask"].to(self.device)
            )
            owner = torch.repeat_interleave(torch.arange(len(forms)), torch.tensor([len(f) for f in forms])).to(self.device)
            summed = torch.zeros(len(forms), embeddings.shape[-1], device=self.device, dtype=embeddings.dtype)
            summed.index_add_(0, owner, embeddings)
            counts = torch.tensor([len(f) for f in forms], device=self.device, dtype=embeddings.dtype)
            self._label_cache = {key: F.normalize(summed / counts.unsqueeze(-1), dim=-1)}
        return self._label_cache[key]

    def _forward(self, model_inputs, use_concept_forms: bool = True):
        candidate_labels = model_inputs.pop("candidate_labels")
        hypothesis_template = model_inputs.pop("hypothesis_template")
        image_embedding = self.model.sentence_embeddings(**model_inputs)
        labels = self.label_embeddings(candidate_labels, hypothesis_template, use_concept_forms)
        scale = self.model.contrastive.logit_scale.detach().clamp(max=MAX_LOGIT_SCALE).exp()
        return {"candidate_labels": candidate_labels, "logits": scale * image_embedding.float() @ labels.float().T}

    def postprocess(self, model_outputs):
        scores = model_outputs["logits"][0].softmax(dim=-1).tolist()
        ranked = sorted(zip(scores, model_outputs["candidate_labels"]), key=lambda pair: -pair[0])
        return [{"score": score, "label": label} for score, label in ranked]


# ---------------------------------------------------------------------------------------------- visual question answering


class VLMixerVisualQuestionAnsweringPipeline(VLMixerPipelineMixin, Pipeline):
    """
    Visual question answering with a fine-tuned `VLMixerForQuestionAnswering`: `[CLS] question [SEP] regions [SEP]`,
    the regions being crops of the image (by default the whole image and the processor's `grid_size` grid; pass
    `boxes=` for others) turned into features by the model's built-in backbone. The answer head is a multi-label
    classifier over `config.id2label` (VQA soft scores), so each answer's score is its sigmoid probability, as in the
    ViLT pipeline of transformers v4; the `top_k` best answers come first.

    Example:

    ```python
    >>> vqa = pipeline("visual-question-answering", model="org/vlmixer-vqa", trust_remote_code=True)
    >>> vqa(image="kitchen.jpg", question="what is on the table?", top_k=2)
    [{'score': 0.71, 'answer': 'cup'}, {'score': 0.12, 'answer': 'plate'}]
    ```
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_processor()
        id2label = getattr(self.model.config, "id2label", None) or {}
        if not hasattr(self.model, "classifier") or len(id2label) < 1:
            raise ValueError(
                f"{type(self.model).__name__} is not a question-answering model with an answer vocabulary "
                "(config.id2label); load the folder with AutoModelForVisualQuestionAnswering (VLMixerForQuestionAnswering)."
            )

    def __call__(self, image=None, question=None, **kwargs):
        """
        Args:
            image: a PIL image, a path or URL, an (H, W) / (H, W, C) array; or a list of those (each asked `question`,
                or the questions of a list of the same length); or `{"image", "question"}` dicts.
            question (`str` or `list[str]`): the question(s).
            top_k (`int`, defaults to 5): how many answers to return (at most the answer vocabulary).
            boxes (`list` of normalised `(x1, y1, x2, y2)`, *optional*): the regions of every image; by default the
                whole image and the processor's grid.
            timeout (`float`, *optional*): for images given as URLs.

        Returns: per question, a list of `{"score", "answer"}`, the highest score first.
        """
        if "images" in kwargs:
            image = kwargs.pop("images")
        if isinstance(image, dict) or (isinstance(image, list) and image and all(isinstance(i, dict) for i in image)):
            if question is not None:
                raise ValueError("Pass the question inside the {'image', 'question'} inputs or as `question=`, not both.")
            inputs = image
        elif image is None or question is None:
            raise ValueError("Pass an image and a question: vqa(image=..., question=...).")
        elif isinstance(image, (list, tuple)):
            questions = [question] * len(image) if isinstance(question, str) else list(question)
            if len(questions) != len(image):
                raise ValueError(f"Got {len(image)} images but {len(questions)} questions.")
            inputs = [{"image": i, "question": q} for i, q in zip(image, questions)]
        elif isinstance(question, (list, tuple)):
            inputs = [{"image": image, "question": q} for q in question]
        else:
            inputs = {"image": image, "question": question}
        return self._run(inputs, kwargs)

    def _sanitize_parameters(self, top_k=None, boxes=None, timeout=None, **kwargs):
        if kwargs:
            raise TypeError(f"Unexpected arguments: {sorted(kwargs)}.")
        preprocess = {key: value for key, value in {"boxes": boxes, "timeout": timeout}.items() if value is not None}
        postprocess = {} if top_k is None else {"top_k": top_k}
        return preprocess, {}, postprocess

    def preprocess(self, inputs, boxes=None, timeout=None):
        if not isinstance(inputs, dict) or "image" not in inputs or "question" not in inputs:
            raise ValueError("Each input must be a dict with an 'image' and a 'question'.")
        question = inputs["question"]
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"The question must be a non-empty string, got {question!r}.")
        if IMAGE_MARKER in question:
            raise ValueError(f"The question goes before the image's regions; it may not hold {IMAGE_MARKER} markers.")
        image = as_rgb_image(inputs["image"], timeout=timeout)
        batch = self.processor(text=[question], images=[image], boxes=None if boxes is None else [boxes], return_tensors="pt")
        model_inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids", "pixel_values", "visual_boxes")}
        model_inputs["pixel_values"] = model_inputs["pixel_values"].to(self.model.dtype)
        return model_inputs

    def _forward(self, model_inputs):
        return {"logits": self.model(**model_inputs).logits}

    def postprocess(self, model_outputs, top_k: int = 5):
        if top_k < 1:
            raise ValueError(f"`top_k` must be at least 1, got {top_k}.")
        probabilities = model_outputs["logits"][0].float().sigmoid()
        scores, ids = probabilities.topk(min(top_k, probabilities.numel()))
        id2label = self.model.config.id2label
        return [{"score": score, "answer": id2label[index]} for score, index in zip(scores.tolist(), ids.tolist())]


# ---------------------------------------------------------------------------------------------- registry and saving


# task -> (pipeline class name, transformers Auto classes it loads the model with, the model classes it serves)
PIPELINES = {
    "zero-shot-image-classification": (
        "VLMixerZeroShotImageClassificationPipeline",
        ("AutoModelForPreTraining",),
        ("VLMixerForPreTraining",),
    ),
    # transformers v5 removed its own task of this name; a folder's `custom_pipelines` still serves it.
    "visual-question-answering": (
        "VLMixerVisualQuestionAnsweringPipeline",
        ("AutoModelForVisualQuestionAnswering",),
        ("VLMixerForQuestionAnswering",),
    ),
}


def custom_pipelines_for(architecture: str | None = None, tasks=None) -> dict:
    """
    The `config.custom_pipelines` entries of the tasks `architecture` (a model class name) serves, or of `tasks`:
    `{task: {"impl": "pipeline_vlmixer.<Class>", "pt": [Auto class names], "type": "multimodal"}}`.
    """
    if tasks is None:
        tasks = [task for task, (_, _, served) in PIPELINES.items() if architecture is None or architecture in served]
    unknown = sorted(set(tasks) - set(PIPELINES))
    if unknown:
        raise ValueError(f"No VLMixer pipeline for {unknown}; there are {sorted(PIPELINES)}.")
    module = PIPELINE_FILE.removesuffix(".py")
    return {task: {"impl": f"{module}.{PIPELINES[task][0]}", "pt": list(PIPELINES[task][1]), "type": "multimodal"}
            for task in tasks}  # fmt: skip


def save_pipelines(save_directory, tasks=None) -> dict:
    """
    Makes a saved VLMixer folder serve its pipelines through remote code: copies this file into it and adds the
    `custom_pipelines` of its architecture (or of `tasks`) to its `config.json`. Returns the entries added.
    """
    config_file = os.path.join(save_directory, CONFIG_NAME)
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"{config_file} is missing: save the model into {save_directory} first.")
    with open(config_file, encoding="utf-8") as handle:
        config = json.load(handle)
    architectures = config.get("architectures") or [None]
    entries = {}
    for architecture in architectures:
        entries.update(custom_pipelines_for(architecture, tasks))
    if not entries:
        return {}
    source = os.path.abspath(__file__)
    target = os.path.join(save_directory, PIPELINE_FILE)
    if not os.path.exists(target) or not os.path.samefile(source, target):
        shutil.copyfile(source, target)
    config["custom_pipelines"] = {**(config.get("custom_pipelines") or {}), **entries}
    partial = config_file + ".partial"
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.replace(partial, config_file)
    return entries


def register_pipelines() -> list[str]:
    """
    Registers the VLMixer pipelines with `transformers.pipelines.PIPELINE_REGISTRY`, so that in this process
    `pipeline(task, model=model, processor=processor)` serves them for model objects too (a folder needs no
    registration: its `config.json` names them). This replaces the built-in `zero-shot-image-classification` (CLIP's)
    in this process; transformers logs a warning saying so. Tasks that transformers v5 removed
    (`visual-question-answering`) are refused by `pipeline()` before it reads the registry, so they are not registered:
    serve those from a folder, or build the class directly (`VLMixerVisualQuestionAnsweringPipeline(model=...,
    processor=...)`). Returns the tasks registered.
    """
    import transformers
    from transformers import pipelines

    removed = getattr(pipelines, "REMOVED_TASKS", {})
    registered = []
    for task, (class_name, auto_classes, _) in PIPELINES.items():
        if task in removed:
            continue
        pipelines.PIPELINE_REGISTRY.register_pipeline(
            task,
            pipeline_class=globals()[class_name],
            pt_model=tuple(getattr(transformers, name) for name in auto_classes),
            type="multimodal",
        )
        registered.append(task)
    return registered


__all__ = [
    "VLMixerZeroShotImageClassificationPipeline",
    "VLMixerVisualQuestionAnsweringPipeline",
    "PIPELINES",
    "custom_pipelines_for",
    "save_pipelines",
    "register_pipelines",
    "as_rgb_image",
]
