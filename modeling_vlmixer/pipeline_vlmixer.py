"""VLMixer pipelines: zero-shot image classification, visual question answering, and text and image embeddings.

This file ships with a saved VLMixer folder as Hugging Face remote code (it imports only torch, numpy, transformers
and the standard library at module level; PIL inside functions), so that someone who never installed this package runs

```python
from transformers import pipeline

classifier = pipeline("zero-shot-image-classification", model="org/vlmixer-small", trust_remote_code=True)
classifier("shoe.png", candidate_labels=["sneaker", "bag", "dress"])  # [{"score": 0.93, "label": "sneaker"}, ...]

embed_text = pipeline("feature-extraction", model="org/vlmixer-small", trust_remote_code=True)
embed_text("a red sneaker", pool=True)  # [[...]]: the unit search embedding, as model.get_text_features gives it
embed_image = pipeline("image-feature-extraction", model="org/vlmixer-small", trust_remote_code=True)
embed_image("shoe.png", pool=True)  # [[...]]: the unit search embedding, as model.get_image_features gives it

vqa = pipeline("visual-question-answering", model="org/vlmixer-vqa", trust_remote_code=True)
vqa(image="shoe.png", question="what is this?", top_k=3)  # [{"score": 0.81, "answer": "shoe"}, ...]
```

`pipeline(task, model=folder, trust_remote_code=True)` reads the folder's `config.json`: a task listed in its
`custom_pipelines` is served by the class named there (`"pipeline_vlmixer.<Class>"`, loaded from this file in the
folder) before transformers looks at its own tasks. That is how a folder answers to the built-in task names and to
`visual-question-answering`, which transformers v5 removed from its own pipelines. `save_pipelines(folder)` writes
those entries and copies this file. For a model object, `register_pipelines(model)` writes them into the model's own
config and `pipeline_for(task, model, processor=...)` builds the pipeline they name; transformers' process-wide
registry is never touched, so CLIP and every other model keep their stock pipelines in the same process.

Every pipeline takes `batch_size=` (inputs are padded into batches, as transformers' own pipelines pad them).
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
from transformers.pipelines.feature_extraction import FeatureExtractionPipeline
from transformers.pipelines.image_feature_extraction import ImageFeatureExtractionPipeline


IMAGE_MARKER = "<image>"  # where the processor puts an image's visual token in a text
WHOLE_IMAGE_BOX = [0.0, 0.0, 1.0, 1.0]
MAX_LOGIT_SCALE = 4.6052  # ln(100): the bound the model applies to its learnt inverse temperature
PIPELINE_FILE = "pipeline_vlmixer.py"
CONFIG_NAME = "config.json"
# scripts/evaluate_zero_shot.py records there the prompt it chose for a checkpoint on held-out images
EVAL_RESULTS_NAME = "eval_results.json"
DEFAULT_HYPOTHESIS_TEMPLATE = "a photo of a {}."  # when a checkpoint records none


def given(**params) -> dict:
    """The parameters that were passed (not None): what a pipeline's `_sanitize_parameters` hands on."""
    return {name: value for name, value in params.items() if value is not None}


def checked_top_k(top_k):
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"`top_k` must be a whole number of at least 1, got {top_k!r}.")
    return top_k


def checked_template(template: str) -> str:
    """A zero-shot prompt: one `{}` (the label for the classes, the image's visual token for the image)."""
    if not isinstance(template, str) or template.count("{}") != 1 or IMAGE_MARKER in template:
        raise ValueError(f"`hypothesis_template` must hold exactly one '{{}}' (and no {IMAGE_MARKER}), got {template!r}.")
    return template


def recorded_prompt(name_or_path) -> str:
    """
    The prompt the checkpoint `name_or_path` (a folder or a Hub id) records in `eval_results.json`, else
    "a photo of a {}.". A Trainer's `eval_results.json` holds metrics only: no prompt was chosen for that checkpoint.
    """
    from transformers.utils import cached_file

    if not name_or_path:  # a model built in memory has no folder
        return DEFAULT_HYPOTHESIS_TEMPLATE
    try:
        path = cached_file(str(name_or_path), EVAL_RESULTS_NAME, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)  # fmt: skip
    except OSError:  # the folder a model object was loaded from is gone
        return DEFAULT_HYPOTHESIS_TEMPLATE
    if path is None:
        return DEFAULT_HYPOTHESIS_TEMPLATE
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}): rerun the evaluation or delete the file.") from None
    prompt = record.get("prompt", DEFAULT_HYPOTHESIS_TEMPLATE) if isinstance(record, dict) else None
    if not isinstance(prompt, str) or prompt.count("{}") != 1:
        raise ValueError(f"{path} records the prompt {prompt!r}; a prompt holds exactly one '{{}}' for the label.")
    return prompt


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
    """What the VLMixer pipelines share: the `VLMixerProcessor` (loaded with the model), images, and saving."""

    # `pipeline()` loads the folder's AutoProcessor (tokenizer, image processor, vocabulary) and nothing else; the
    # base class takes the tokenizer from it, which pads the inputs into batches.
    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False

    def _check_processor(self):
        if self.processor is None or not hasattr(self.processor, "encode_image_text"):
            raise ValueError(
                f"{type(self).__name__} needs the model's VLMixerProcessor: pass `processor=` (AutoProcessor of the "
                "same folder) or load the pipeline from a folder that holds one."
            )

    def _check_contrastive_model(self):
        if not all(hasattr(self.model, name) for name in ("contrastive", "get_text_features", "get_image_features")):
            raise ValueError(
                f"{type(self.model).__name__} has no contrastive head; {type(self).__name__} needs the pre-training "
                "model (AutoModelForPreTraining) or the retrieval model."
            )

    def _image_inputs(self, image, text: str, timeout=None) -> dict:
        """`text` holding one `<image>` marker, filled with the whole image as one visual token: input_ids and
        attention_mask (1, L), pixel_values (1, 3, S, S), visual_boxes (1, 4)."""
        image = as_rgb_image(image, timeout=timeout)
        batch = self.processor(text=[text], images=[image], boxes=[[WHOLE_IMAGE_BOX]], return_tensors="pt")
        inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "pixel_values", "visual_boxes")}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    def save_pretrained(self, save_directory, **kwargs):
        """Saves the model, the processor (with its vocabulary and gallery), this file and the `custom_pipelines`
        entry of this pipeline's task alone (as transformers' `Pipeline.save_pretrained` does), so that
        `pipeline(model=folder, trust_remote_code=True)` needs no task name."""
        os.makedirs(save_directory, exist_ok=True)
        self.model.save_pretrained(save_directory, **kwargs)
        (self.processor or self.tokenizer).save_pretrained(save_directory, **kwargs)
        if self.task in PIPELINES:
            save_pipelines(save_directory, tasks=[self.task], keep_others=False)


# ---------------------------------------------------------------------------------------------- zero-shot


class VLMixerZeroShotImageClassificationPipeline(VLMixerPipelineMixin, Pipeline):
    """
    Zero-shot image classification with a pre-trained VLMixer (`VLMixerForPreTraining`), as CLIP's pipeline does it:
    the image enters the prompt as a visual token ("a photo of a <image>."), each candidate label the same prompt with
    its name ("a photo of a sneaker."); the scores are the softmax, at the model's learnt temperature, of the cosine
    similarities of their contrastive sentence embeddings.

    The prompt defaults to the one the checkpoint records in its `eval_results.json` (chosen on held-out images by
    scripts/evaluate_zero_shot.py), else "a photo of a {}.". When the processor's concept vocabulary knows a label, its
    prompt is the average over the label's surface forms ("trouser", "trousers", "jeans", ...), as in the model's
    zero-shot evaluation; `use_concept_forms=False` uses the label alone.

    Example:

    ```python
    >>> classifier = pipeline("zero-shot-image-classification", model="org/vlmixer-small", trust_remote_code=True)
    >>> classifier(image, candidate_labels=["sneaker", "bag", "dress"], top_k=2)
    [{'score': 0.93, 'label': 'sneaker'}, {'score': 0.05, 'label': 'bag'}]
    ```
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_processor()
        self._check_contrastive_model()
        self._label_cache = {}
        self._default_hypothesis_template = None

    @property
    def default_hypothesis_template(self) -> str:
        """The checkpoint's recorded prompt (read on first use, so that a call naming its own prompt never needs it)."""
        if self._default_hypothesis_template is None:
            template = recorded_prompt(getattr(self.model, "name_or_path", None))
            self._default_hypothesis_template = checked_template(template)
        return self._default_hypothesis_template

    def __call__(self, image=None, candidate_labels=None, **kwargs):
        """
        Args:
            image: a PIL image, a path or URL, an (H, W) / (H, W, C) array, or a list of those.
            candidate_labels (`list[str]`): the classes.
            hypothesis_template (`str`, *optional*): the prompt; `{}` is the label for the classes and the image's
                visual token for the image. Defaults to the prompt the checkpoint's `eval_results.json` records,
                else `"a photo of a {}."`.
            top_k (`int`, *optional*): return the `top_k` best labels only (all by default).
            use_concept_forms (`bool`, defaults to `True`): average each label known to the concept vocabulary over
                its surface forms.
            batch_size (`int`, *optional*): images per forward pass (the label prompts are embedded once per call).
            timeout (`float`, *optional*): for images given as URLs.

        Returns: per image, a list of `{"score", "label"}`, the highest score first; the scores of all the candidate
        labels sum to 1.
        """
        if "images" in kwargs:
            image = kwargs.pop("images")
        if image is None:
            raise ValueError("Pass an image (or a list of images) to classify.")
        if not candidate_labels:
            raise ValueError("Pass `candidate_labels`, the list of classes to choose from.")
        if isinstance(candidate_labels, str):
            candidate_labels = [label.strip() for label in candidate_labels.split(",")]
        return super().__call__(image, candidate_labels=list(candidate_labels), **kwargs)

    def _sanitize_parameters(self, candidate_labels=None, hypothesis_template=None, use_concept_forms=None, top_k=None,
                             timeout=None, **kwargs):  # fmt: skip
        if kwargs:
            raise TypeError(f"Unexpected arguments: {sorted(kwargs)}.")
        if hypothesis_template is not None:
            checked_template(hypothesis_template)
        # The labels and the prompt go to the forward pass as parameters, not with each image, so that the images
        # alone are batched.
        preprocess = given(hypothesis_template=hypothesis_template, timeout=timeout)
        forward = given(candidate_labels=candidate_labels, hypothesis_template=hypothesis_template,
                        use_concept_forms=use_concept_forms)  # fmt: skip
        postprocess = given(candidate_labels=candidate_labels, top_k=checked_top_k(top_k))
        return preprocess, forward, postprocess

    def preprocess(self, image, hypothesis_template=None, timeout=None):
        template = hypothesis_template or self.default_hypothesis_template
        return self._image_inputs(image, template.format(IMAGE_MARKER), timeout)

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

    def _forward(self, model_inputs, candidate_labels, hypothesis_template=None, use_concept_forms: bool = True):
        """A batch of images (B, L) prompts -> logits (B, labels)."""
        template = hypothesis_template or self.default_hypothesis_template
        image_embeddings = self.model.sentence_embeddings(**model_inputs)
        labels = self.label_embeddings(candidate_labels, template, use_concept_forms)
        scale = self.model.contrastive.logit_scale.detach().clamp(max=MAX_LOGIT_SCALE).exp()
        return {"logits": scale * image_embeddings.float() @ labels.float().T}

    def postprocess(self, model_outputs, candidate_labels, top_k=None):
        scores = model_outputs["logits"][0].softmax(dim=-1).tolist()
        ranked = sorted(zip(scores, candidate_labels), key=lambda pair: -pair[0])
        return [{"score": score, "label": label} for score, label in ranked[:top_k]]


# ---------------------------------------------------------------------------------------------- embeddings


class VLMixerFeatureExtractionPipeline(VLMixerPipelineMixin, FeatureExtractionPipeline):
    """
    Text features from a VLMixer with a contrastive head (`VLMixerForPreTraining`): transformers' `feature-extraction`
    (the encoder's token states, (1, tokens, hidden_size) per text) plus `pool=True`, the name
    `image-feature-extraction` gives pooled outputs: the (1, projection_dim) unit text embedding for search, exactly
    `model.get_text_features(...).pooler_output`. Its dot product with `image-feature-extraction`'s `pool=True`
    output is the model's cosine similarity of text and image.

    Example:

    ```python
    >>> embed = pipeline("feature-extraction", model="org/vlmixer-small", trust_remote_code=True)
    >>> embed(["a red sneaker", "a leather bag"], pool=True, return_tensors=True)[0].shape
    torch.Size([1, 256])
    ```
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_contrastive_model()

    def _sanitize_parameters(self, pool=None, **kwargs):
        preprocess, forward, postprocess = super()._sanitize_parameters(**kwargs)
        return preprocess, forward, {**postprocess, **given(pool=pool)}

    def _forward(self, model_inputs):
        """Token ids (B, L) -> last_hidden_state (B, L, hidden_size) and pooler_output (B, projection_dim)."""
        return self.model.get_text_features(**model_inputs)

    # the same `pool` and `return_tensors` as transformers' image-feature-extraction
    postprocess = ImageFeatureExtractionPipeline.postprocess


class VLMixerImageFeatureExtractionPipeline(VLMixerPipelineMixin, ImageFeatureExtractionPipeline):
    """
    Image features from a VLMixer with a contrastive head (`VLMixerForPreTraining`), as transformers'
    `image-feature-extraction`: the encoder's token states of `[CLS] image [SEP]` ((1, 3, hidden_size) per image, the
    whole image as one visual token), or with `pool=True` the (1, projection_dim) unit image embedding for search,
    exactly `model.get_image_features(pixel_values=..., visual_boxes=...).pooler_output`.

    Example:

    ```python
    >>> embed = pipeline("image-feature-extraction", model="org/vlmixer-small", trust_remote_code=True)
    >>> embed("shoe.png", pool=True, return_tensors=True).shape
    torch.Size([1, 256])
    ```
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_processor()
        self._check_contrastive_model()

    def preprocess(self, image, timeout=None):
        """The whole image: pixel_values (1, 3, S, S) for the model's backbone and its box (1, 4)."""
        inputs = self._image_inputs(image, IMAGE_MARKER, timeout)  # `[CLS] <image> [SEP]`: its crop and box are used
        return {"pixel_values": inputs["pixel_values"], "visual_boxes": inputs["visual_boxes"]}

    def _forward(self, model_inputs):
        """B images -> last_hidden_state (B, 3, hidden_size) and pooler_output (B, projection_dim)."""
        return self.model.get_image_features(**model_inputs)


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
            batch_size (`int`, *optional*): questions per forward pass.
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
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(self, top_k=None, boxes=None, timeout=None, **kwargs):
        if kwargs:
            raise TypeError(f"Unexpected arguments: {sorted(kwargs)}.")
        return given(boxes=boxes, timeout=timeout), {}, given(top_k=checked_top_k(top_k))

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
        """(B, L) questions with their regions -> logits (B, answers)."""
        return {"logits": self.model(**model_inputs).logits}

    def postprocess(self, model_outputs, top_k: int = 5):
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
    # transformers' own feature-extraction pipelines would load AutoModel, the encoder without the contrastive head
    "feature-extraction": (
        "VLMixerFeatureExtractionPipeline",
        ("AutoModelForPreTraining",),
        ("VLMixerForPreTraining",),
    ),
    "image-feature-extraction": (
        "VLMixerImageFeatureExtractionPipeline",
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


def save_pipelines(save_directory, tasks=None, keep_others: bool = True) -> dict:
    """
    Makes a saved VLMixer folder serve its pipelines through remote code: copies this file into it and adds the
    `custom_pipelines` of its architecture (or of `tasks`) to its `config.json` (in place of those it lists unless
    `keep_others`). Returns the entries added.
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
    kept = (config.get("custom_pipelines") or {}) if keep_others else {}
    config["custom_pipelines"] = {**kept, **entries}
    partial = config_file + ".partial"
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.replace(partial, config_file)
    return entries


def register_pipelines(model) -> list[str]:
    """
    Adds the VLMixer pipelines that `model` serves to its own `config.custom_pipelines` (the entries `save_pretrained`
    writes, so a folder saved from it serves them too) and returns their tasks. Nothing is registered with
    transformers' process-wide `PIPELINE_REGISTRY`: there `zero-shot-image-classification` and the feature
    extractions are every model's (CLIP's too), and replacing them would break those models in the whole process.
    `pipeline()` reads `custom_pipelines` from a folder only: build the pipeline of a model object with `pipeline_for`.
    """
    entries = custom_pipelines_for(type(model).__name__)
    model.config.custom_pipelines = {**(getattr(model.config, "custom_pipelines", None) or {}), **entries}
    return list(entries)


def pipeline_for(task: str, model, **kwargs) -> Pipeline:
    """
    The pipeline that `model.config.custom_pipelines` names for `task`, built for the model object with `kwargs`
    (`processor=`, `device=`, `batch_size=`, ...), as `pipeline(task, model=folder, trust_remote_code=True)` builds it
    for a folder. It works for `visual-question-answering` too, a task `transformers.pipeline` refuses in v5.
    """
    named = (getattr(model.config, "custom_pipelines", None) or {}).get(task)
    if named is None:
        raise ValueError(
            f"{type(model).__name__}'s config.custom_pipelines names no {task!r} pipeline; `register_pipelines(model)` "
            f"adds those its architecture serves ({sorted(custom_pipelines_for(type(model).__name__))})."
        )
    pipeline_class = globals()[named["impl"].rsplit(".", 1)[-1]]
    return pipeline_class(model=model, task=task, **kwargs)


__all__ = [
    "VLMixerZeroShotImageClassificationPipeline",
    "VLMixerFeatureExtractionPipeline",
    "VLMixerImageFeatureExtractionPipeline",
    "VLMixerVisualQuestionAnsweringPipeline",
    "PIPELINES",
    "custom_pipelines_for",
    "save_pipelines",
    "register_pipelines",
    "pipeline_for",
    "recorded_prompt",
    "as_rgb_image",
]
