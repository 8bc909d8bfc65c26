"""The VLMixer pipelines (modeling_vlmixer/pipeline_vlmixer.py) from saved folders: zero-shot image classification,
visual question answering, and the built-in fill-mask and feature-extraction, in this process and as remote code in a
fresh interpreter that cannot import this package.

Tiny models (2 layers, 32 wide, random EfficientNet-Lite0 backbone at 32 px, MiniLM's tokenizer) check the
computation against a direct one; the trained vlmixer-small checkpoint (when `make demo` made it) checks that the
right Fashion-MNIST class wins and that the pipeline computes what scripts/evaluate_zero_shot.py computes.
"""

import ast
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from transformers import AutoTokenizer, pipeline

from vlmixer import modeling_vlmixer
from vlmixer.modeling_vlmixer import VLMixerForPreTraining
from vlmixer.modeling_vlmixer.pipeline_vlmixer import (
    PIPELINES,
    VLMixerZeroShotImageClassificationPipeline,
    custom_pipelines_for,
    save_pipelines,
)
from vlmixer.processing import ConceptVocabulary, VLMixerProcessor
from vlmixer.processing.processing_vlmixer import efficientnet_image_processor

from .conftest import REPO_ROOT, run_isolated_python, tiny_config


VLMixerForQuestionAnswering = getattr(modeling_vlmixer.modeling_vlmixer, "VLMixerForQuestionAnswering", None)
needs_qa_head = pytest.mark.skipif(VLMixerForQuestionAnswering is None, reason="VLMixerForQuestionAnswering not in modeling_vlmixer yet")
CHECKPOINT = REPO_ROOT / "vlmixer-small"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
LABELS = ["dog", "sneaker", "red bag", "person"]  # "dog" and "person" have surface forms in the COCO vocabulary
ANSWERS = {0: "yes", 1: "no", 2: "shoe", 3: "bag", 4: "two"}
WHOLE = [[0.0, 0.0, 1.0, 1.0]]


def image_array(seed: int, shape=(40, 30, 3)) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)


def backbone_config(**overrides):
    """The tiny test config with the built-in EfficientNet-Lite0 (random weights) and BERT's vocabulary."""
    return tiny_config(vocab_size=30522, vision_backbone="efficientnet-lite0", visual_feature_dim=1280,
                       feature_source=None, **overrides)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_processor(minilm_path):
    return VLMixerProcessor(AutoTokenizer.from_pretrained(minilm_path), efficientnet_image_processor(32), cmc_ratio=0.0,
                            backbone_id="efficientnet-lite0", concepts=ConceptVocabulary.coco80())  # fmt: skip


@pytest.fixture(scope="module")
def zero_shot_folder(tmp_path_factory, tiny_processor):
    """A tiny VLMixerForPreTraining saved with its processor and the pipeline code (save_pipelines)."""
    torch.manual_seed(0)
    model = VLMixerForPreTraining(backbone_config()).eval()
    with torch.no_grad():
        model.contrastive.logit_scale.fill_(3.0)  # sharper than the init so that scores differ visibly
    folder = tmp_path_factory.mktemp("zero_shot") / "vlmixer-tiny"
    model.save_pretrained(folder)
    tiny_processor.save_pretrained(folder)
    save_pipelines(folder)
    return folder, model


@pytest.fixture(scope="module")
def vqa_folder(tmp_path_factory, tiny_processor):
    if VLMixerForQuestionAnswering is None:
        pytest.skip("VLMixerForQuestionAnswering not in modeling_vlmixer yet")
    torch.manual_seed(1)
    model = VLMixerForQuestionAnswering(backbone_config(id2label=ANSWERS)).eval()
    folder = tmp_path_factory.mktemp("vqa") / "vlmixer-tiny-vqa"
    model.save_pretrained(folder)
    tiny_processor.save_pretrained(folder)
    save_pipelines(folder)
    return folder, model


@pytest.fixture(scope="module")
def zero_shot(zero_shot_folder):
    folder, _ = zero_shot_folder
    return pipeline("zero-shot-image-classification", model=str(folder), trust_remote_code=True, device=-1)


@torch.no_grad()
def direct_zero_shot_scores(model, processor, image, labels, template="a photo of a {}.", concept_forms=True):
    """The zero-shot scores computed by hand: prompt with the image's visual token against the label prompts."""
    pair = processor(text=[template.format("<image>")], images=[image], boxes=[WHOLE])
    image_embedding = model.sentence_embeddings(input_ids=pair["input_ids"], attention_mask=pair["attention_mask"],
                                                pixel_values=pair["pixel_values"], visual_boxes=pair["visual_boxes"])  # fmt: skip
    rows = []
    for label in labels:
        forms = [label]
        if concept_forms and label in processor.vocabulary:
            forms += [form for form in processor.vocabulary.forms(label) if form != label]
        texts = processor(text=[template.format(form) for form in forms], cmc_ratio=0.0)
        rows.append(model.sentence_embeddings(input_ids=texts["input_ids"], attention_mask=texts["attention_mask"]).mean(0))
    label_embeddings = F.normalize(torch.stack(rows), dim=-1)
    scale = model.contrastive.logit_scale.clamp(max=4.6052).exp()
    return (scale * image_embedding @ label_embeddings.T).softmax(-1)[0]


# ---------------------------------------------------------------------------------------------- saving


def test_save_pipelines_lists_the_tasks_of_the_architecture_and_copies_the_code(zero_shot_folder):
    folder, _ = zero_shot_folder
    config = json.loads((folder / "config.json").read_text())
    assert config["custom_pipelines"] == {
        "zero-shot-image-classification": {
            "impl": "pipeline_vlmixer.VLMixerZeroShotImageClassificationPipeline",
            "pt": ["AutoModelForPreTraining"],
            "type": "multimodal",
        }
    }
    assert config["auto_map"]["AutoModelForPreTraining"] == "modeling_vlmixer.VLMixerForPreTraining"
    source = REPO_ROOT / "modeling_vlmixer" / "pipeline_vlmixer.py"
    assert (folder / "pipeline_vlmixer.py").read_bytes() == source.read_bytes()
    assert custom_pipelines_for("VLMixerForMaskedLM") == {}
    assert set(custom_pipelines_for("VLMixerForQuestionAnswering")) == {"visual-question-answering"}
    with pytest.raises(ValueError, match="No VLMixer pipeline"):
        custom_pipelines_for(tasks=["image-to-text"])


def test_pipeline_file_is_remote_code_safe():
    """Module-level imports: the standard library, torch, numpy and transformers only; no package, no `..` import."""
    tree = ast.parse((REPO_ROOT / "modeling_vlmixer" / "pipeline_vlmixer.py").read_text())
    roots = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports would have to travel with the file"
            roots.add(node.module.split(".")[0])
    assert roots <= {"json", "os", "shutil", "numpy", "torch", "transformers"}, roots


def test_save_pipelines_needs_a_saved_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        save_pipelines(tmp_path)


def test_pipeline_save_pretrained_writes_a_folder_that_loads_again(zero_shot, tmp_path):
    zero_shot.save_pretrained(tmp_path / "again")
    config = json.loads((tmp_path / "again" / "config.json").read_text())
    assert list(config["custom_pipelines"]) == ["zero-shot-image-classification"]
    for name in ("pipeline_vlmixer.py", "processor_config.json", "concepts.json", "tokenizer.json", "model.safetensors"):
        assert (tmp_path / "again" / name).exists(), name
    reloaded = pipeline(model=str(tmp_path / "again"), trust_remote_code=True, device=-1)  # task from custom_pipelines
    image = image_array(5)
    assert reloaded(image, candidate_labels=LABELS) == zero_shot(image, candidate_labels=LABELS)


# ---------------------------------------------------------------------------------------------- zero-shot (tiny)


def test_zero_shot_scores_are_the_softmax_of_scaled_similarities(zero_shot, zero_shot_folder, tiny_processor):
    _, model = zero_shot_folder
    image = image_array(0)
    predictions = zero_shot(image, candidate_labels=LABELS)
    assert sorted(p["label"] for p in predictions) == sorted(LABELS)
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-5)
    expected = direct_zero_shot_scores(model, tiny_processor, to_pil(image), LABELS)
    got = torch.tensor([next(p["score"] for p in predictions if p["label"] == label) for label in LABELS])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert max(scores) - min(scores) > 1e-3  # the labels are told apart at all


def test_zero_shot_template_and_concept_forms(zero_shot, zero_shot_folder, tiny_processor):
    _, model = zero_shot_folder
    image = image_array(1)
    for template, forms in (("this is a {}.", True), ("a photo of a {}.", False)):
        predictions = zero_shot(image, candidate_labels=LABELS, hypothesis_template=template, use_concept_forms=forms)
        expected = direct_zero_shot_scores(model, tiny_processor, to_pil(image), LABELS, template, forms)
        got = torch.tensor([next(p["score"] for p in predictions if p["label"] == label) for label in LABELS])
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    with_forms = zero_shot(image, candidate_labels=LABELS, use_concept_forms=True)
    without = zero_shot(image, candidate_labels=LABELS, use_concept_forms=False)
    assert with_forms != without  # "dog" is averaged over dog, dogs, puppies, puppy
    for bad in ("a photo of a dog.", "a {} and a {}.", "a {} next to <image>."):
        with pytest.raises(ValueError, match="hypothesis_template"):
            zero_shot(image, candidate_labels=LABELS, hypothesis_template=bad)
    with pytest.raises(ValueError, match="candidate_labels"):
        zero_shot(image, candidate_labels=[])


def to_pil(array: np.ndarray):
    from PIL import Image

    return Image.fromarray(array).convert("RGB")


def test_zero_shot_accepts_pil_images_paths_arrays_and_lists(zero_shot, tmp_path):
    from PIL import Image

    rgb = image_array(2)
    Image.fromarray(rgb).save(tmp_path / "image.png")
    reference = zero_shot(rgb, candidate_labels=LABELS)
    assert zero_shot(Image.fromarray(rgb), candidate_labels=LABELS) == reference
    assert zero_shot(str(tmp_path / "image.png"), candidate_labels=LABELS) == reference
    assert zero_shot(rgb.astype(np.float32) / 255.0, candidate_labels=LABELS)[0]["label"] == reference[0]["label"]
    gray = image_array(3, (28, 28))
    assert zero_shot(gray, candidate_labels=LABELS) == zero_shot(np.stack([gray] * 3, -1), candidate_labels=LABELS)
    both = zero_shot([rgb, gray], candidate_labels=LABELS)
    assert len(both) == 2 and both[0] == reference
    assert zero_shot([rgb, gray], candidate_labels=LABELS, batch_size=2) == both  # accepted, run one at a time
    with pytest.raises(TypeError, match="image"):
        zero_shot(3, candidate_labels=LABELS)


def test_zero_shot_needs_trust_remote_code_and_a_contrastive_model(zero_shot_folder, tiny_processor):
    folder, model = zero_shot_folder
    with pytest.raises(ValueError, match="trust_remote_code"):
        pipeline("zero-shot-image-classification", model=str(folder))
    with pytest.raises(ValueError, match="contrastive head"):
        VLMixerZeroShotImageClassificationPipeline(model=model.vlmixer, processor=tiny_processor, device=-1)
    with pytest.raises(ValueError, match="VLMixerProcessor"):
        VLMixerZeroShotImageClassificationPipeline(model=model, device=-1)


def test_zero_shot_from_model_objects_in_process(zero_shot_folder, tiny_processor, zero_shot):
    _, model = zero_shot_folder
    direct = VLMixerZeroShotImageClassificationPipeline(model=model, processor=tiny_processor, device=-1)
    by_class = pipeline("zero-shot-image-classification", model=model, processor=tiny_processor, device=-1,
                        pipeline_class=VLMixerZeroShotImageClassificationPipeline)  # fmt: skip
    image = image_array(4)
    reference = zero_shot(image, candidate_labels=LABELS)
    for pipe in (direct, by_class):
        got = pipe(image, candidate_labels=LABELS)
        assert [p["label"] for p in got] == [p["label"] for p in reference]
        np.testing.assert_allclose([p["score"] for p in got], [p["score"] for p in reference], atol=1e-5)


# ---------------------------------------------------------------------------------------------- VQA (tiny)


@needs_qa_head
def test_vqa_scores_are_sigmoid_probabilities_of_the_answer_head(vqa_folder, tiny_processor):
    folder, model = vqa_folder
    config = json.loads((folder / "config.json").read_text())
    assert list(config["custom_pipelines"]) == ["visual-question-answering"]
    assert config["custom_pipelines"]["visual-question-answering"]["pt"] == ["AutoModelForVisualQuestionAnswering"]
    vqa = pipeline("visual-question-answering", model=str(folder), trust_remote_code=True, device=-1)
    image = image_array(6)
    answers = vqa(image=image, question="what is on the table?", top_k=3)
    assert len(answers) == 3 and all(a["answer"] in ANSWERS.values() for a in answers)
    scores = [a["score"] for a in answers]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    batch = tiny_processor(text=["what is on the table?"], images=[to_pil(image)])  # whole image + 2x2 grid
    assert batch["visual_boxes"].shape == (5, 4)
    with torch.no_grad():
        logits = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "pixel_values", "visual_boxes")}).logits
    probabilities, ids = logits[0].sigmoid().topk(3)
    assert [a["answer"] for a in answers] == [ANSWERS[i] for i in ids.tolist()]
    np.testing.assert_allclose(scores, probabilities.tolist(), atol=1e-5)
    assert len(vqa(image=image, question="what is on the table?")) == 5  # top_k defaults to 5 (all here)
    assert len(vqa(image=image, question="what is on the table?", top_k=50)) == len(ANSWERS)


@needs_qa_head
def test_vqa_inputs_boxes_and_errors(vqa_folder):
    folder, _ = vqa_folder
    vqa = pipeline("visual-question-answering", model=str(folder), trust_remote_code=True, device=-1)
    image, other = image_array(7), image_array(8)
    one = vqa(image=image, question="is it a shoe?", top_k=2)
    assert vqa({"image": image, "question": "is it a shoe?"}, top_k=2) == one
    many = vqa([{"image": image, "question": "is it a shoe?"}, {"image": other, "question": "how many?"}], top_k=2)
    assert len(many) == 2 and many[0] == one
    assert vqa([{"image": image, "question": "is it a shoe?"}, {"image": other, "question": "how many?"}], top_k=2,
               batch_size=2) == many  # fmt: skip
    assert vqa(image=[image, other], question="is it a shoe?", top_k=2)[0] == one
    assert vqa(image=image, question=["is it a shoe?", "how many?"], top_k=2) == [one, many[1]]
    whole_only = vqa(image=image, question="is it a shoe?", top_k=5, boxes=WHOLE)
    assert [a["score"] for a in whole_only] != [a["score"] for a in vqa(image=image, question="is it a shoe?", top_k=5)]
    with pytest.raises(ValueError, match="question"):
        vqa(image=image)
    with pytest.raises(ValueError, match="<image>"):
        vqa(image=image, question="is <image> a shoe?")
    with pytest.raises(ValueError, match="top_k"):
        vqa(image=image, question="is it a shoe?", top_k=0)


@needs_qa_head
def test_vqa_refuses_a_model_without_answer_vocabulary(zero_shot_folder, tiny_processor):
    from vlmixer.modeling_vlmixer.pipeline_vlmixer import VLMixerVisualQuestionAnsweringPipeline

    _, model = zero_shot_folder
    with pytest.raises(ValueError, match="id2label"):
        VLMixerVisualQuestionAnsweringPipeline(model=model, processor=tiny_processor, device=-1)


# ---------------------------------------------------------------------------------------------- built-in pipelines


def test_fill_mask_and_feature_extraction_from_the_saved_folder(zero_shot_folder, tiny_processor):
    folder, model = zero_shot_folder
    fill = pipeline("fill-mask", model=str(folder), trust_remote_code=True, device=-1)
    predictions = fill("a dog is sitting on the [MASK] .", top_k=3)
    batch = tiny_processor.tokenizer("a dog is sitting on the [MASK] .", return_tensors="pt")
    with torch.no_grad():
        hidden = model.vlmixer(**batch).last_hidden_state
        logits = model.cls(hidden)
    position = int((batch["input_ids"][0] == tiny_processor.tokenizer.mask_token_id).nonzero())
    assert [p["token"] for p in predictions] == logits[0, position].topk(3).indices.tolist()
    extract = pipeline("feature-extraction", model=str(folder), trust_remote_code=True, device=-1)
    features = torch.tensor(extract("a dog is sitting on the mat ."))
    batch = tiny_processor.tokenizer("a dog is sitting on the mat .", return_tensors="pt")
    with torch.no_grad():
        expected = model.vlmixer(**batch).last_hidden_state
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- remote code


def test_all_pipelines_as_remote_code_without_the_package(zero_shot_folder, zero_shot, request, tmp_path):
    """A fresh interpreter that cannot import modeling_vlmixer or processing runs every pipeline from the folders
    (visual question answering too once VLMixerForQuestionAnswering exists)."""
    folder, _ = zero_shot_folder
    with_vqa = VLMixerForQuestionAnswering is not None
    qa_folder = request.getfixturevalue("vqa_folder")[0] if with_vqa else None
    image = image_array(9)
    np.save(tmp_path / "image.npy", image)
    expected = {"zero_shot": zero_shot(image, candidate_labels=LABELS)}
    if with_vqa:
        vqa = pipeline("visual-question-answering", model=str(qa_folder), trust_remote_code=True, device=-1)
        expected["vqa"] = vqa(image=image, question="what is it?", top_k=2)
    code = textwrap.dedent(
        f"""
        import json
        import numpy as np
        from transformers import pipeline
        image = np.load("image.npy")
        zero_shot = pipeline("zero-shot-image-classification", model={str(folder)!r}, trust_remote_code=True, device=-1)
        fill = pipeline("fill-mask", model={str(folder)!r}, trust_remote_code=True, device=-1)
        extract = pipeline("feature-extraction", model={str(folder)!r}, trust_remote_code=True, device=-1)
        out = {{
            "modules": [type(zero_shot).__module__ + "." + type(zero_shot).__name__]
                       + [type(p.model).__module__ + "." + type(p.model).__name__ for p in (zero_shot, fill, extract)],
            "zero_shot": zero_shot(image, candidate_labels={LABELS!r}),
            "fill": fill("a dog is sitting on the [MASK] .", top_k=2),
            "features": np.array(extract("a dog")).shape,
        }}
        if {with_vqa!r}:
            vqa = pipeline("visual-question-answering", model={str(qa_folder)!r}, trust_remote_code=True, device=-1)
            out["modules"] += [type(vqa).__module__ + "." + type(vqa).__name__, type(vqa.model).__module__ + "." + type(vqa.model).__name__]
            out["vqa"] = vqa(image=image, question="what is it?", top_k=2)
        print(json.dumps(out))
        """
    )
    result = run_isolated_python(code, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(m.startswith("transformers_modules.") for m in got["modules"]), got["modules"]
    names = ["VLMixerZeroShotImageClassificationPipeline", "VLMixerForPreTraining", "VLMixerForMaskedLM", "VLMixerModel"]
    if with_vqa:
        names += ["VLMixerVisualQuestionAnsweringPipeline", "VLMixerForQuestionAnswering"]
    assert [m.rsplit(".", 1)[1] for m in got["modules"]] == names
    for task, key in (("zero_shot", "label"), ("vqa", "answer")):
        if task in expected:
            assert [p[key] for p in got[task]] == [p[key] for p in expected[task]]
            np.testing.assert_allclose([p["score"] for p in got[task]], [p["score"] for p in expected[task]], atol=1e-5)
    assert len(got["fill"]) == 2 and got["features"] == [1, 4, 32]


# ---------------------------------------------------------------------------------------------- the trained checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A copy of vlmixer-small with the pipelines added, its pipeline, and a few Fashion-MNIST test images."""
    if not (CHECKPOINT / "model.safetensors").exists():
        pytest.skip(f"{CHECKPOINT} is missing: `make demo` trains it")
    if not (FASHION_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST is not in {FASHION_MNIST}")
    import shutil

    from vlmixer.processing.sources import load_fashion_mnist

    folder = tmp_path_factory.mktemp("trained") / "vlmixer-small"
    shutil.copytree(CHECKPOINT, folder)
    save_pipelines(folder)
    images, labels = load_fashion_mnist("test", str(FASHION_MNIST))
    return pipeline("zero-shot-image-classification", model=str(folder), trust_remote_code=True, device=-1), images, labels


def test_trained_checkpoint_classifies_as_the_evaluation_does(trained):
    """The first five test images of the four classes the evaluation gets right most often (trousers, sandals, bags,
    sneakers: 88-96% in make demo): the pipeline's scores are scripts/evaluate_zero_shot.py's own, and at least 16 of
    the 20 are right (chance: 2)."""
    from vlmixer.scripts import evaluate_zero_shot as evaluation

    classifier, images, labels = trained
    names = evaluation.CLASS_NAMES
    chosen = [int(index) for name in ("trouser", "sandal", "bag", "sneaker")
              for index in np.flatnonzero(labels == names.index(name))[:5]]  # fmt: skip
    model, processor = classifier.model, classifier.processor
    prompt = evaluation.recorded_prompt(str(CHECKPOINT))
    with torch.no_grad():
        classes = evaluation.class_embeddings(model, processor, list(names), prompt, 64)
        pixels = processor(text=["<image>"] * len(chosen), images=[images[i] for i in chosen], boxes=[WHOLE] * len(chosen))
        features = model.vlmixer.get_visual_features(pixels["pixel_values"]).numpy()
        image_embeds = evaluation.embed(model, processor, [prompt.format("<image>")] * len(chosen), [f[None] for f in features],
                                        [WHOLE] * len(chosen), 64)  # fmt: skip
    scale = model.contrastive.logit_scale.clamp(max=4.6052).exp()
    expected = (scale * image_embeds @ classes.T).softmax(-1)
    right = 0
    for row, index in enumerate(chosen):
        predictions = classifier(images[index], candidate_labels=names, hypothesis_template=prompt)
        got = torch.tensor([next(p["score"] for p in predictions if p["label"] == name) for name in names])
        torch.testing.assert_close(got, expected[row], atol=1e-4, rtol=1e-3)
        assert sum(p["score"] for p in predictions) == pytest.approx(1.0, abs=1e-5)
        right += predictions[0]["label"] == names[labels[index]]
    assert right >= 16, f"{right} of {len(chosen)} right"


def test_trained_checkpoint_scores_follow_the_candidate_labels(trained):
    """Removing the winning label hands the win to another; the labels come back in the order of their scores."""
    from vlmixer.scripts.evaluate_zero_shot import recorded_prompt

    classifier, images, labels = trained
    index = int(np.flatnonzero(labels == 1)[0])  # a trouser
    prompt = recorded_prompt(str(CHECKPOINT))
    first = classifier(images[index], candidate_labels=["trouser", "bag", "sneaker"], hypothesis_template=prompt)
    assert first[0]["label"] == "trouser" and first[0]["score"] > 0.5
    rest = classifier(images[index], candidate_labels=["bag", "sneaker"], hypothesis_template=prompt)
    assert {p["label"] for p in rest} == {"bag", "sneaker"}
    assert rest[0]["score"] > first[1]["score"]  # the same similarity ratio over fewer labels


# ---------------------------------------------------------------------------------------------- registry


def test_register_pipelines_serves_model_objects_by_task_name(zero_shot_folder, tiny_processor):
    """In-process registration (it replaces CLIP's built-in task for this process, so it is restored afterwards)."""
    from transformers.pipelines import PIPELINE_REGISTRY

    from vlmixer.modeling_vlmixer.pipeline_vlmixer import register_pipelines

    _, model = zero_shot_folder
    saved = dict(PIPELINE_REGISTRY.supported_tasks)
    try:
        registered = register_pipelines()
        assert "zero-shot-image-classification" in registered
        pipe = pipeline("zero-shot-image-classification", model=model, processor=tiny_processor, device=-1)
        assert isinstance(pipe, VLMixerZeroShotImageClassificationPipeline)
        assert set(registered) <= set(PIPELINES)
    finally:
        PIPELINE_REGISTRY.supported_tasks.clear()
        PIPELINE_REGISTRY.supported_tasks.update(saved)
