"""The VLMixer pipelines (modeling_vlmixer/pipeline_vlmixer.py) from saved folders: zero-shot image classification
(the checkpoint's recorded prompt, top_k, batching), visual question answering, text and image feature extraction
(token states, or with pool=True the contrastive embeddings of get_text_features / get_image_features), and the
built-in fill-mask, in this process and as remote code in a fresh interpreter that cannot import this package;
register_pipelines / pipeline_for for model objects, leaving transformers' registry alone.

Tiny models (2 layers, 32 wide, random EfficientNet-Lite0 backbone at 32 px, MiniLM's tokenizer) check the
computation against a direct one; the trained vlmixer-small checkpoint (when `make demo` made it) checks that the
right Fashion-MNIST class wins and that the pipeline computes what scripts/evaluate_zero_shot.py computes.
"""

import ast
import json
import shutil
import textwrap
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from transformers import AutoTokenizer, pipeline
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vlmixer import modeling_vlmixer
from vlmixer.modeling_vlmixer import VLMixerForPreTraining
from vlmixer.modeling_vlmixer.pipeline_vlmixer import (
    VLMixerFeatureExtractionPipeline,
    VLMixerZeroShotImageClassificationPipeline,
    custom_pipelines_for,
    pipeline_for,
    register_pipelines,
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


@torch.no_grad()
def direct_text_features(model, processor, texts):
    """model.get_text_features of each text alone, stacked: last_hidden_state (n, L, hidden) when the texts tokenize to
    one length, pooler_output (n, projection_dim)."""
    outputs = [model.get_text_features(**processor.tokenizer(text, return_tensors="pt")) for text in texts]
    return BaseModelOutputWithPooling(
        last_hidden_state=torch.cat([o.last_hidden_state for o in outputs]) if len(texts) == 1 else None,
        pooler_output=torch.cat([o.pooler_output for o in outputs]),
    )


@torch.no_grad()
def direct_image_features(model, processor, images):
    """model.get_image_features of whole images: last_hidden_state (n, 3, hidden), pooler_output (n, projection_dim)."""
    pixels = processor(text=["<image>"] * len(images), images=[to_pil(i) for i in images], boxes=[WHOLE] * len(images))
    return model.get_image_features(pixel_values=pixels["pixel_values"], visual_boxes=pixels["visual_boxes"])


@contextmanager
def batch_sizes_seen(encoder, with_images: bool = True):
    """The batch size of every forward pass of `encoder` (only those that carry images when `with_images`)."""
    sizes = []

    def record(module, args, kwargs):
        images = [kwargs.get(name) for name in ("pixel_values", "visual_features")]
        if not with_images or any(value is not None for value in images):
            sizes.append(len(args[0] if args else kwargs["input_ids"]))

    handle = encoder.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield sizes
    finally:
        handle.remove()


# ---------------------------------------------------------------------------------------------- saving


def test_save_pipelines_lists_the_tasks_of_the_architecture_and_copies_the_code(zero_shot_folder):
    folder, _ = zero_shot_folder
    config = json.loads((folder / "config.json").read_text())
    served = {
        "zero-shot-image-classification": "VLMixerZeroShotImageClassificationPipeline",
        "feature-extraction": "VLMixerFeatureExtractionPipeline",  # AutoModel would lack the contrastive head
        "image-feature-extraction": "VLMixerImageFeatureExtractionPipeline",
    }
    assert config["custom_pipelines"] == {
        task: {"impl": f"pipeline_vlmixer.{name}", "pt": ["AutoModelForPreTraining"], "type": "multimodal"}
        for task, name in served.items()
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
    batched = zero_shot([rgb, gray], candidate_labels=LABELS, batch_size=2)
    assert [[p["label"] for p in ranked] for ranked in batched] == [[p["label"] for p in ranked] for ranked in both]
    np.testing.assert_allclose([[p["score"] for p in r] for r in batched], [[p["score"] for p in r] for r in both], atol=1e-5)
    with pytest.raises(TypeError, match="image"):
        zero_shot(3, candidate_labels=LABELS)


def test_zero_shot_default_prompt_is_the_one_the_checkpoint_records(zero_shot_folder, tmp_path):
    """eval_results.json (scripts/evaluate_zero_shot.py's record) names the prompt a call without one uses."""
    folder, _ = zero_shot_folder
    copy = tmp_path / "recorded"
    shutil.copytree(folder, copy)
    (copy / "eval_results.json").write_text(json.dumps({"prompt": "this is a {}.", "zero_shot_top1": 0.5}))
    classifier = pipeline("zero-shot-image-classification", model=str(copy), trust_remote_code=True, device=-1)
    assert classifier.default_hypothesis_template == "this is a {}."
    image = image_array(10)
    default = classifier(image, candidate_labels=LABELS)
    assert default == classifier(image, candidate_labels=LABELS, hypothesis_template="this is a {}.")
    assert default != classifier(image, candidate_labels=LABELS, hypothesis_template="a photo of a {}.")

    (copy / "eval_results.json").write_text(json.dumps({"eval_loss": 1.0}))  # a Trainer's metrics: no prompt chosen
    plain = pipeline("zero-shot-image-classification", model=str(copy), trust_remote_code=True, device=-1)
    assert plain.default_hypothesis_template == "a photo of a {}."
    (copy / "eval_results.json").write_text(json.dumps({"prompt": "no placeholder"}))
    broken = pipeline("zero-shot-image-classification", model=str(copy), trust_remote_code=True, device=-1)
    assert broken(image, candidate_labels=LABELS, hypothesis_template="this is a {}.") == default  # not read
    with pytest.raises(ValueError, match="eval_results.json"):
        broken(image, candidate_labels=LABELS)


def test_zero_shot_top_k_keeps_the_best_labels(zero_shot):
    image = image_array(11)
    ranked = zero_shot(image, candidate_labels=LABELS)
    assert zero_shot(image, candidate_labels=LABELS, top_k=2) == ranked[:2]
    assert zero_shot(image, candidate_labels=LABELS, top_k=10) == ranked  # more than there are labels: all
    assert zero_shot([image, image], candidate_labels=LABELS, top_k=1) == [ranked[:1], ranked[:1]]
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="top_k"):
            zero_shot(image, candidate_labels=LABELS, top_k=bad)


def test_zero_shot_batch_size_batches_the_images(zero_shot):
    images = [image_array(seed) for seed in range(20, 25)]
    one_by_one = zero_shot(images, candidate_labels=LABELS)  # also caches the label prompts' embeddings
    with batch_sizes_seen(zero_shot.model.vlmixer) as sizes:
        batched = zero_shot(images, candidate_labels=LABELS, batch_size=2)
    assert sizes == [2, 2, 1]
    for got, expected in zip(batched, one_by_one):
        assert [p["label"] for p in got] == [p["label"] for p in expected]
        np.testing.assert_allclose([p["score"] for p in got], [p["score"] for p in expected], atol=1e-5)
    with batch_sizes_seen(zero_shot.model.vlmixer) as sizes:
        zero_shot(images, candidate_labels=LABELS)
    assert sizes == [1] * 5


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
    batched = vqa([{"image": image, "question": "is it a shoe?"}, {"image": other, "question": "how many?"}], top_k=2,
                  batch_size=2)  # fmt: skip
    assert [[a["answer"] for a in r] for r in batched] == [[a["answer"] for a in r] for r in many]
    np.testing.assert_allclose([[a["score"] for a in r] for r in batched], [[a["score"] for a in r] for r in many], atol=1e-5)
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
def test_vqa_batch_size_batches_the_questions(vqa_folder):
    folder, _ = vqa_folder
    vqa = pipeline("visual-question-answering", model=str(folder), trust_remote_code=True, device=-1)
    questions = ["is it a shoe?", "how many bags are there?", "what colour is it?"]
    one_by_one = vqa(image=image_array(12), question=questions, top_k=3)
    with batch_sizes_seen(vqa.model.vlmixer) as sizes:
        batched = vqa(image=image_array(12), question=questions, top_k=3, batch_size=2)
    assert sizes == [2, 1]
    for got, expected in zip(batched, one_by_one):
        assert [a["answer"] for a in got] == [a["answer"] for a in expected]
        np.testing.assert_allclose([a["score"] for a in got], [a["score"] for a in expected], atol=1e-5)


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


def test_feature_extraction_pool_is_the_unit_text_embedding_of_get_text_features(zero_shot_folder, tiny_processor):
    folder, model = zero_shot_folder
    extract = pipeline("feature-extraction", model=str(folder), trust_remote_code=True, device=-1)
    texts = ["a dog", "a red bag next to a person on a bench"]
    expected = direct_text_features(model, tiny_processor, texts).pooler_output
    pooled = torch.tensor([row[0] for row in extract(texts, pool=True)])
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pooled.norm(dim=-1), torch.ones(2), atol=1e-5, rtol=0)
    one = extract("a dog", pool=True, return_tensors=True)
    assert one.shape == (1, model.config.projection_dim)
    tokens = extract("a dog", return_tensors=True)  # without `pool`: the token states, as before
    torch.testing.assert_close(tokens, direct_text_features(model, tiny_processor, ["a dog"]).last_hidden_state)
    with batch_sizes_seen(extract.model.vlmixer, with_images=False) as sizes:
        batched = extract(texts + ["a cat"], pool=True, batch_size=2, return_tensors=True)
    assert sizes == [2, 1]
    torch.testing.assert_close(torch.cat(batched[:2]), expected, atol=1e-5, rtol=1e-4)  # padded, same embedding
    with pytest.raises(ValueError, match="contrastive head"):
        VLMixerFeatureExtractionPipeline(model=model.vlmixer, processor=tiny_processor, device=-1)


def test_image_feature_extraction_pool_is_the_unit_image_embedding_of_get_image_features(zero_shot_folder, tiny_processor):
    folder, model = zero_shot_folder
    embed = pipeline("image-feature-extraction", model=str(folder), trust_remote_code=True, device=-1)
    images = [image_array(30), image_array(31, (28, 28)), image_array(32)]
    expected = direct_image_features(model, tiny_processor, images)
    pooled = torch.tensor([row[0] for row in embed(images, pool=True)])
    torch.testing.assert_close(pooled, expected.pooler_output, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pooled.norm(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
    tokens = embed(images[0], return_tensors=True)  # `[CLS] image [SEP]` token states
    assert tokens.shape == (1, 3, model.config.hidden_size)
    torch.testing.assert_close(tokens, expected.last_hidden_state[:1], atol=1e-5, rtol=1e-4)
    with batch_sizes_seen(embed.model.vlmixer) as sizes:
        batched = embed(images, pool=True, batch_size=2, return_tensors=True)
    assert sizes == [2, 1]
    torch.testing.assert_close(torch.cat(batched), expected.pooler_output, atol=1e-5, rtol=1e-4)
    # the two pipelines' embeddings meet in one space: their dot product is the model's text-image cosine similarity
    text = pipeline("feature-extraction", model=str(folder), trust_remote_code=True, device=-1)("a dog", pool=True)
    similarity = torch.tensor(text[0]) @ pooled[0]
    torch.testing.assert_close(similarity, direct_text_features(model, tiny_processor, ["a dog"]).pooler_output[0]
                               @ expected.pooler_output[0], atol=1e-5, rtol=1e-4)  # fmt: skip


# ---------------------------------------------------------------------------------------------- remote code


def test_all_pipelines_as_remote_code_without_the_package(zero_shot_folder, zero_shot, tiny_processor, request, tmp_path):
    """A fresh interpreter that cannot import modeling_vlmixer or processing runs every pipeline from the folders
    (visual question answering too once VLMixerForQuestionAnswering exists)."""
    folder, model = zero_shot_folder
    with_vqa = VLMixerForQuestionAnswering is not None
    qa_folder = request.getfixturevalue("vqa_folder")[0] if with_vqa else None
    image = image_array(9)
    np.save(tmp_path / "image.npy", image)
    expected = {"zero_shot": zero_shot(image, candidate_labels=LABELS)}
    expected["text_embedding"] = direct_text_features(model, tiny_processor, ["a dog"]).pooler_output.tolist()
    expected["image_embedding"] = direct_image_features(model, tiny_processor, [image]).pooler_output.tolist()
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
        embed_image = pipeline("image-feature-extraction", model={str(folder)!r}, trust_remote_code=True, device=-1)
        out = {{
            "modules": [type(p).__module__ + "." + type(p).__name__ for p in (zero_shot, extract, embed_image)]
                       + [type(p.model).__module__ + "." + type(p.model).__name__ for p in (zero_shot, fill, extract)],
            "zero_shot": zero_shot(image, candidate_labels={LABELS!r}),
            "fill": fill("a dog is sitting on the [MASK] .", top_k=2),
            "features": np.array(extract("a dog")).shape,
            "text_embedding": extract("a dog", pool=True),
            "image_embedding": embed_image(image, pool=True),
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
    names = ["VLMixerZeroShotImageClassificationPipeline", "VLMixerFeatureExtractionPipeline",
             "VLMixerImageFeatureExtractionPipeline", "VLMixerForPreTraining", "VLMixerForMaskedLM",
             "VLMixerForPreTraining"]  # fmt: skip
    if with_vqa:
        names += ["VLMixerVisualQuestionAnsweringPipeline", "VLMixerForQuestionAnswering"]
    assert [m.rsplit(".", 1)[1] for m in got["modules"]] == names
    for task, key in (("zero_shot", "label"), ("vqa", "answer")):
        if task in expected:
            assert [p[key] for p in got[task]] == [p[key] for p in expected[task]]
            np.testing.assert_allclose([p["score"] for p in got[task]], [p["score"] for p in expected[task]], atol=1e-5)
    assert len(got["fill"]) == 2 and got["features"] == [1, 4, 32]
    for key in ("text_embedding", "image_embedding"):
        np.testing.assert_allclose(got[key], expected[key], atol=1e-5)


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


def test_register_pipelines_names_them_in_the_models_own_config_only(zero_shot_folder, tiny_processor):
    """register_pipelines(model) leaves transformers' process-wide registry (CLIP's zero-shot task) alone; pipeline_for
    builds the pipeline the model's own custom_pipelines names, VQA included (transformers.pipeline refuses that)."""
    from transformers.pipelines import PIPELINE_REGISTRY

    _, trained_model = zero_shot_folder
    torch.manual_seed(0)
    model = VLMixerForPreTraining(backbone_config()).eval()  # in memory, never saved: no custom_pipelines yet
    model.load_state_dict(trained_model.state_dict())
    registry = {task: dict(entry) for task, entry in PIPELINE_REGISTRY.supported_tasks.items()}
    with pytest.raises(ValueError, match="register_pipelines"):
        pipeline_for("zero-shot-image-classification", model, processor=tiny_processor)
    registered = register_pipelines(model)
    assert registered == ["zero-shot-image-classification", "feature-extraction", "image-feature-extraction"]
    assert set(model.config.custom_pipelines) == set(registered)
    assert {task: dict(entry) for task, entry in PIPELINE_REGISTRY.supported_tasks.items()} == registry
    classifier = pipeline_for("zero-shot-image-classification", model, processor=tiny_processor, device=-1)
    assert isinstance(classifier, VLMixerZeroShotImageClassificationPipeline)
    assert classifier.task == "zero-shot-image-classification"
    assert classifier.default_hypothesis_template == "a photo of a {}."  # no folder, no record
    stock = PIPELINE_REGISTRY.supported_tasks["zero-shot-image-classification"]["impl"]
    assert str(stock).endswith("zero_shot_image_classification.ZeroShotImageClassificationPipeline")  # CLIP's still
    image = image_array(4)
    np.testing.assert_allclose([p["score"] for p in classifier(image, candidate_labels=LABELS)],
                               direct_zero_shot_scores(model, tiny_processor, to_pil(image), LABELS).sort(descending=True).values,
                               atol=1e-5)  # fmt: skip
    if VLMixerForQuestionAnswering is not None:
        qa_model = VLMixerForQuestionAnswering(backbone_config(id2label=ANSWERS)).eval()
        assert register_pipelines(qa_model) == ["visual-question-answering"]
        vqa = pipeline_for("visual-question-answering", qa_model, processor=tiny_processor, device=-1)
        assert len(vqa(image=image, question="what is it?", top_k=2)) == 2
