"""The downstream heads: shapes, losses against hand computations, masks, generation, loading, Trainer."""

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from transformers import (
    AutoModelForImageTextToText,
    AutoModelForSequenceClassification,
    AutoModelForVisualQuestionAnswering,
    Trainer,
    TrainingArguments,
)

from vlmixer.modeling_vlmixer import (
    VLMixerForCaptioning,
    VLMixerForImageTextRetrieval,
    VLMixerForPreTraining,
    VLMixerForQuestionAnswering,
    VLMixerForSequenceClassification,
    VLMixerForVisualReasoning,
    VLMixerModel,
)
from vlmixer.modeling_vlmixer.modeling_vlmixer import ImageRegions, image_sequence_inputs, text_image_pair_inputs

from .conftest import tiny_batch, tiny_config


CLS, SEP, IMG = 101, 102, 1


def make(cls, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return cls(tiny_config(**{"num_labels": 5, **overrides})).eval()


def texts():
    """Three `[CLS] text [SEP]` rows, padded at the end."""
    ids = torch.tensor([[CLS, 5, 6, SEP, 0], [CLS, 7, SEP, 0, 0], [CLS, 8, 9, 10, SEP]])
    return ids, (ids != 0).long()


def images(seed: int = 0):
    """Three images of 3, 1 and 4 regions, padded to 4: features (3, 4, 16), boxes (3, 4, 4), region mask (3, 4)."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(3, 4, 16, generator=generator)
    corners = torch.rand(3, 4, 2, generator=generator) * 0.5
    boxes = torch.cat([corners, corners + 0.4], dim=-1)
    region_mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    return features, boxes, region_mask


def nlvr_batch(config, seed: int = 0):
    """Two statements, each with two images: (2, 2, 8) ids and the regions of the 4 pairs in flattened order."""
    one = tiny_batch(config, seed)
    ids = torch.stack([one["input_ids"][0], one["input_ids"][0], one["input_ids"][1], one["input_ids"][1]])
    mask = torch.stack(
        [one["attention_mask"][0], one["attention_mask"][0], one["attention_mask"][1], one["attention_mask"][1]]
    )
    features = torch.randn(2 + 2 + 1 + 1, config.visual_feature_dim, generator=torch.Generator().manual_seed(seed + 1))
    return dict(input_ids=ids.view(2, 2, 8), attention_mask=mask.view(2, 2, 8), visual_features=features)


# ---------------------------------------------------------------------------------------------- shapes and losses


def test_question_answering_loss_is_vilt_bce_times_answers():
    model = make(VLMixerForQuestionAnswering)
    labels = torch.zeros(2, 5)
    labels[0, 1], labels[0, 3], labels[1, 4] = 1.0, 0.3, 0.6
    outputs = model(**tiny_batch(model.config), labels=labels)
    assert outputs.logits.shape == (2, 5)
    p = torch.sigmoid(outputs.logits.detach())
    by_hand = -(labels * p.log() + (1 - labels) * (1 - p).log()).mean() * 5
    torch.testing.assert_close(outputs.loss.detach(), by_hand, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"labels` must have shape \(2, 5\)"):
        model(**tiny_batch(model.config), labels=torch.zeros(2))


@pytest.mark.parametrize("problem", ["single", "multi", "regression"])
def test_sequence_classification_losses_follow_bert(problem):
    num_labels = 1 if problem == "regression" else 5
    model = make(VLMixerForSequenceClassification, num_labels=num_labels)
    batch = tiny_batch(model.config)
    labels = {"single": torch.tensor([1, 4]), "multi": torch.tensor([[1.0, 0, 0, 1, 0], [0, 0, 1, 0, 0]]),
              "regression": torch.tensor([0.5, -1.0])}[problem]  # fmt: skip
    outputs = model(**batch, labels=labels)
    logits = outputs.logits.detach()
    assert logits.shape == (2, num_labels)
    expected = {
        "single": lambda: F.cross_entropy(logits, labels),
        "multi": lambda: F.binary_cross_entropy_with_logits(logits, labels),
        "regression": lambda: F.mse_loss(logits.squeeze(), labels),
    }[problem]()
    torch.testing.assert_close(outputs.loss.detach(), expected)
    names = {"single": "single_label_classification", "multi": "multi_label_classification"}
    expected_type = names.get(problem, problem)
    assert model.config.problem_type == expected_type


def test_visual_reasoning_classifies_both_pooled_pairs_their_product_and_difference():
    model = make(VLMixerForVisualReasoning, num_labels=2)
    batch = nlvr_batch(model.config)
    labels = torch.tensor([1, 0])
    outputs = model(**batch, labels=labels)
    assert outputs.logits.shape == (2, 2)
    flat_ids, flat_mask = batch["input_ids"].view(4, 8), batch["attention_mask"].view(4, 8)
    counts = (flat_ids == IMG).sum(dim=1).tolist()
    starts = np.cumsum([0] + counts)
    pooled = [
        model.vlmixer(input_ids=flat_ids[i : i + 1], attention_mask=flat_mask[i : i + 1],
                      visual_features=batch["visual_features"][starts[i] : starts[i + 1]]).pooler_output[0]
        for i in range(4)
    ]  # fmt: skip
    pairs = [torch.cat([first, second, first * second, (first - second).abs()])
             for first, second in (pooled[0:2], pooled[2:4])]  # fmt: skip
    by_hand = model.classifier(torch.stack(pairs))
    torch.testing.assert_close(outputs.logits, by_hand, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outputs.loss, F.cross_entropy(by_hand, labels), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\(batch_size, 2, length\)"):
        model(input_ids=flat_ids, attention_mask=flat_mask, visual_features=batch["visual_features"])
    with pytest.raises(ValueError, match="shape of `input_ids`"):
        model(**dict(batch, attention_mask=flat_mask))


def test_retrieval_with_match_labels_is_cross_entropy_of_the_matching_head():
    model = make(VLMixerForImageTextRetrieval)
    ids, mask = texts()
    features, boxes, region_mask = images()
    labels = torch.tensor([1, 0, 1])
    outputs = model(ids, mask, features, boxes, region_mask, labels=labels)
    assert outputs.logits.shape == (3, 2) and outputs.logits_per_text.shape == (3, 3)
    assert outputs.text_embeds.shape == outputs.image_embeds.shape == (3, 16)
    torch.testing.assert_close(outputs.logits_per_image, outputs.logits_per_text.T)
    torch.testing.assert_close(outputs.loss, F.cross_entropy(outputs.logits, labels))
    assert outputs.contrastive_loss is None
    with pytest.raises(ValueError, match="0 \\(no match\\) or 1"):
        model(ids, mask, features, boxes, region_mask, labels=torch.tensor([1, 2, 0]))
    with pytest.raises(ValueError, match="3 texts but 2 images"):
        model(ids, mask, features[:2], boxes[:2], region_mask[:2])


def test_pair_sequences_are_the_processor_layout():
    config = tiny_config()
    ids, mask = texts()
    features, boxes, region_mask = images()
    regions = ImageRegions(features[region_mask.bool()], boxes[region_mask.bool()], region_mask.sum(1))
    pairs = text_image_pair_inputs(ids, mask, regions, torch.tensor([0, 2]), torch.tensor([1, 0]), config)
    expected_rows = [[CLS, 5, 6, SEP, IMG, SEP], [CLS, 8, 9, 10, SEP, IMG, IMG, IMG, SEP]]
    for row, expected in zip(pairs["input_ids"].tolist(), expected_rows):
        assert row == expected + [0] * (9 - len(expected))
    assert pairs["token_type_ids"][1].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert pairs["attention_mask"].sum(1).tolist() == [6, 9]
    torch.testing.assert_close(pairs["visual_features"], torch.cat([features[1, :1], features[0, :3]]))
    torch.testing.assert_close(pairs["visual_boxes"], torch.cat([boxes[1, :1], boxes[0, :3]]))
    image = image_sequence_inputs(region_mask.sum(1), config)
    assert image["input_ids"][1].tolist() == [CLS, IMG, SEP, 0, 0, 0]
    assert image["input_ids"][2].tolist() == [CLS, IMG, IMG, IMG, IMG, SEP]
    with pytest.raises(ValueError, match="right padding"):
        text_image_pair_inputs(ids.flip(1), mask.flip(1), regions, torch.tensor([0]), torch.tensor([0]), config)


def test_sequences_match_the_processor_with_the_real_tokenizer(minilm_path):
    from transformers import AutoTokenizer

    from vlmixer.processing import VLMixerProcessor
    from vlmixer.processing.processing_vlmixer import efficientnet_image_processor

    processor = VLMixerProcessor(AutoTokenizer.from_pretrained(minilm_path), efficientnet_image_processor(32),
                                 backbone_id="precomputed:test-features")  # fmt: skip
    config = tiny_config(vocab_size=30522)
    assert (config.cls_token_id, config.sep_token_id, config.image_token_id) == (
        processor.tokenizer.cls_token_id, processor.tokenizer.sep_token_id, processor.image_token_id)  # fmt: skip
    regions = [np.random.default_rng(0).normal(size=(count, 16)).astype(np.float32) for count in (2, 3)]
    as_prompt = processor(text=["<image>" * 2, "<image>" * 3], region_features=regions)
    ours = image_sequence_inputs(torch.tensor([2, 3]), config)
    assert ours["input_ids"].tolist() == as_prompt["input_ids"].tolist()
    captions = ["a dog on a sofa.", "two bags"]
    joint = processor(text=captions, region_features=regions)
    alone = processor(text=captions, cmc_ratio=0.0)
    flat = ImageRegions(torch.from_numpy(np.concatenate(regions)), None, torch.tensor([2, 3]))
    pairs = text_image_pair_inputs(
        alone["input_ids"], alone["attention_mask"], flat, torch.arange(2), torch.arange(2), config
    )
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert pairs[name].tolist() == joint[name].tolist(), name


def test_image_features_ignore_padding_regions_and_equal_the_sequence_embedding():
    model = make(VLMixerForImageTextRetrieval)
    features, boxes, region_mask = images()
    together = model.get_image_features(features, boxes, region_mask).pooler_output
    for i, count in enumerate(region_mask.sum(1).tolist()):
        alone = model.get_image_features(features[i : i + 1, :count], boxes[i : i + 1, :count]).pooler_output
        torch.testing.assert_close(alone[0], together[i], atol=1e-5, rtol=1e-5)
        sequence = torch.tensor([[CLS] + [IMG] * count + [SEP]])
        by_hand = model.sentence_embeddings(
            input_ids=sequence,
            attention_mask=torch.ones_like(sequence),
            visual_features=features[i, :count],
            visual_boxes=boxes[i, :count],
        )
        torch.testing.assert_close(by_hand[0], together[i], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together.norm(dim=-1), torch.ones(3))
    one_region = model.get_image_features(features[:, 0]).pooler_output  # (B, D): the whole image as one region
    assert one_region.shape == (3, 16)
    with pytest.raises(ValueError, match=r"\(batch_size, num_regions, 16\)"):
        model.get_image_features(torch.randn(3, 4, 17))
    with pytest.raises(ValueError, match="at least one region"):
        model.get_image_features(features, boxes, region_mask * torch.tensor([[1], [0], [1]]))
    with pytest.raises(ValueError, match="exactly one of"):
        model.get_image_features()


def joint_by_hand(model, ids, mask, features, region_mask, pairs):
    """Matching logits of (text, image) pairs, each encoded alone as `[CLS] text [SEP] regions [SEP]`."""
    logits = []
    for t, i in pairs:
        text = ids[t, : int(mask[t].sum())].tolist()
        count = int(region_mask[i].sum())
        sequence = torch.tensor([text + [IMG] * count + [SEP]])
        types = torch.tensor([[0] * len(text) + [1] * (count + 1)])
        pooled = model.vlmixer(input_ids=sequence, attention_mask=torch.ones_like(sequence), token_type_ids=types,
                               visual_features=features[i, :count]).pooler_output  # fmt: skip
        logits.append(model.matching(pooled)[0])
    return torch.stack(logits)


def test_matched_pairs_loss_is_contrast_plus_matching_with_hard_negatives():
    model = make(VLMixerForImageTextRetrieval, paired_contrastive_loss_weight=0.5, paired_matching_loss_weight=2.0)
    ids, mask = texts()
    features, _, region_mask = images()
    ids, mask, features, region_mask = ids[:2], mask[:2], features[:2], region_mask[:2]
    outputs = model(ids, mask, features, region_mask=region_mask, return_loss=True)
    scale = model.contrastive.logit_scale.exp()
    similarity = scale * outputs.text_embeds @ outputs.image_embeds.T
    targets = torch.arange(2)
    contrast = (F.cross_entropy(similarity, targets) + F.cross_entropy(similarity.T, targets)) / 2
    torch.testing.assert_close(outputs.contrastive_loss, contrast, atol=1e-5, rtol=1e-5)
    # With two pairs the only negative of each text and of each image is the other pair's.
    pairs = [(0, 0), (1, 1), (0, 1), (1, 0), (1, 0), (0, 1)]
    logits = joint_by_hand(model, ids, mask, features, region_mask, pairs)
    matching = F.cross_entropy(logits, torch.tensor([1, 1, 0, 0, 0, 0]))
    torch.testing.assert_close(outputs.matching_loss, matching, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outputs.loss, 0.5 * contrast + 2.0 * matching, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outputs.logits, logits[:2], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        model(ids[:1], mask[:1], features[:1], region_mask=region_mask[:1], return_loss=True)


def test_hard_negatives_follow_the_similarity_and_skip_identical_texts(monkeypatch):
    model = make(VLMixerForImageTextRetrieval)
    similarity = torch.tensor([[0.0, 50.0, -50.0], [0.0, 0.0, 50.0], [50.0, -50.0, 0.0]])
    never = torch.eye(3, dtype=torch.bool)
    torch.manual_seed(0)
    assert model._draw(similarity, never).tolist() == [1, 2, 0]
    assert model._draw(similarity, torch.ones(3, 3, dtype=torch.bool)).tolist() == [-1, -1, -1]

    ids, mask = texts()
    ids[1] = ids[0]  # texts 0 and 1 are the same caption: neither is a negative of the other's image
    mask[1] = mask[0]
    features, _, region_mask = images()
    seen = {}
    original = model.matching_logits

    def recording(text_ids, text_mask, regions, text_index=None, image_index=None):
        if text_index is not None:
            seen["pairs"] = list(zip(text_index.tolist(), image_index.tolist()))
        return original(text_ids, text_mask, regions, text_index, image_index)

    monkeypatch.setattr(model, "matching_logits", recording)
    for seed in range(5):
        torch.manual_seed(seed)
        model(ids, mask, features, region_mask=region_mask, return_loss=True)
        positives, negatives = seen["pairs"][:3], seen["pairs"][3:]
        assert positives == [(0, 0), (1, 1), (2, 2)]
        assert len(negatives) == 6 and all({t, i} != {0, 1} and t != i for t, i in negatives)


# ---------------------------------------------------------------------------------------------- gradients


ALL_HEADS = [VLMixerForQuestionAnswering, VLMixerForSequenceClassification, VLMixerForVisualReasoning,
             VLMixerForImageTextRetrieval, VLMixerForCaptioning]  # fmt: skip


@pytest.mark.parametrize("cls", ALL_HEADS)
def test_gradients_reach_the_encoder_and_the_visual_embeddings(cls):
    model = make(cls).train()
    if cls is VLMixerForVisualReasoning:
        loss = model(**nlvr_batch(model.config), labels=torch.tensor([0, 1])).loss
    elif cls is VLMixerForImageTextRetrieval:
        ids, mask = texts()
        features, boxes, region_mask = images()
        loss = model(ids, mask, features, boxes, region_mask, return_loss=True).loss
    elif cls is VLMixerForCaptioning:
        ids, mask = texts()
        features, boxes, region_mask = images()
        loss = model(ids, mask, features, boxes, region_mask, labels=ids.masked_fill(mask == 0, -100)).loss
    else:
        labels = torch.rand(2, 5) if cls is VLMixerForQuestionAnswering else torch.tensor([0, 3])
        loss = model(**tiny_batch(model.config), labels=labels).loss
    loss.backward()
    names = ("vlmixer.encoder.layer.0.attention.self.query.weight", "vlmixer.embeddings.word_embeddings.weight",
             "vlmixer.embeddings.visual.feature_projection.weight")  # fmt: skip
    for name in names:
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


# ---------------------------------------------------------------------------------------------- captioning


def caption_inputs():
    ids, mask = texts()
    features, boxes, region_mask = images()
    return dict(
        input_ids=ids, attention_mask=mask, visual_features=features, visual_boxes=boxes, region_mask=region_mask
    )


def test_captioning_loss_is_next_token_cross_entropy():
    model = make(VLMixerForCaptioning)
    inputs = caption_inputs()
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    outputs = model(**inputs, labels=labels)
    assert outputs.logits.shape == (3, 5, 120)
    terms = [F.cross_entropy(outputs.logits[b, t], labels[b, t + 1], reduction="none")
             for b in range(3) for t in range(4) if labels[b, t + 1] != -100]  # fmt: skip
    torch.testing.assert_close(outputs.loss, torch.stack(terms).mean())


def test_caption_is_causal_while_regions_are_seen_by_every_word():
    model = make(VLMixerForCaptioning)
    inputs = caption_inputs()
    reference = model(**inputs, output_hidden_states=True)
    changed_ids = inputs["input_ids"].clone()
    changed_ids[2, 3] = 55
    changed = model(**dict(inputs, input_ids=changed_ids), output_hidden_states=True)
    torch.testing.assert_close(changed.logits[:, :3], reference.logits[:, :3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(changed.logits[:2], reference.logits[:2], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(changed.logits[2, 3:], reference.logits[2, 3:], atol=1e-3)
    image_part = inputs["visual_features"].shape[1] + 2  # the image never sees the caption
    torch.testing.assert_close(changed.hidden_states[-1][:, :image_part], reference.hidden_states[-1][:, :image_part])
    features = inputs["visual_features"].clone()
    features[2, 3] += 1.0  # the last region of image 2: every word of caption 2 sees it
    moved = model(**dict(inputs, visual_features=features)).logits
    assert (moved[2] - reference.logits[2]).abs().amax(dim=-1).min() > 1e-4
    torch.testing.assert_close(moved[:2], reference.logits[:2])


def test_captioning_padding_takes_no_place():
    model = make(VLMixerForCaptioning)
    inputs = caption_inputs()
    together = model(**inputs).logits
    for b in range(3):
        count, length = int(inputs["region_mask"][b].sum()), int(inputs["attention_mask"][b].sum())
        alone = model(input_ids=inputs["input_ids"][b : b + 1, :length],
                      visual_features=inputs["visual_features"][b : b + 1, :count],
                      visual_boxes=inputs["visual_boxes"][b : b + 1, :count]).logits  # fmt: skip
        torch.testing.assert_close(alone[0], together[b, :length], atol=1e-5, rtol=1e-5)


def greedy_by_hand(model, images_kwargs, steps: int) -> torch.Tensor:
    batch = images_kwargs["visual_features"].shape[0]
    ids = torch.full((batch, 1), CLS)
    finished = torch.zeros(batch, dtype=torch.bool)
    for _ in range(steps):
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), **images_kwargs).logits[:, -1]
        token = logits.argmax(dim=-1).masked_fill(finished, model.config.pad_token_id)
        ids = torch.cat([ids, token[:, None]], dim=1)
        finished |= token == SEP
        if finished.all():
            break
    return ids


def test_greedy_generate_is_the_argmax_loop_and_one_beam_is_greedy():
    model = make(VLMixerForCaptioning)
    features, boxes, region_mask = images()
    kwargs = dict(visual_features=features, visual_boxes=boxes, region_mask=region_mask)
    generated = model.generate(**kwargs, max_new_tokens=7, do_sample=False)
    torch.testing.assert_close(generated, greedy_by_hand(model, kwargs, 7), atol=0, rtol=0)
    one_beam = model.generate(**kwargs, max_new_tokens=7, num_beams=1, do_sample=False)
    torch.testing.assert_close(one_beam, generated, atol=0, rtol=0)
    prompt = generated[:, :3]  # a caption prefix continues like the greedy run from there
    torch.testing.assert_close(model.generate(prompt, **kwargs, max_new_tokens=5, do_sample=False), generated[:, :8])


def test_beam_search_scores_are_the_model_log_probabilities():
    model = make(VLMixerForCaptioning, seed=3)
    features, boxes, region_mask = images()
    kwargs = dict(visual_features=features, visual_boxes=boxes, region_mask=region_mask)
    beams = model.generate(**kwargs, max_new_tokens=6, num_beams=3, length_penalty=0.0, do_sample=False,
                           return_dict_in_generate=True, output_scores=True)  # fmt: skip
    sequences = beams.sequences
    assert sequences.shape[0] == 3 and (sequences[:, 0] == CLS).all()
    logits = model(input_ids=sequences, attention_mask=torch.ones_like(sequences), **kwargs).logits
    log_probs = logits.log_softmax(-1)[:, :-1].gather(-1, sequences[:, 1:, None])[..., 0]
    keep = torch.ones_like(log_probs, dtype=torch.bool)
    for b in range(3):  # tokens up to the first [SEP] count; padding after it does not
        ends = (sequences[b, 1:] == SEP).nonzero()
        if len(ends):
            keep[b, int(ends[0]) + 1 :] = False
    torch.testing.assert_close(beams.sequences_scores, (log_probs * keep).sum(1), atol=1e-4, rtol=1e-4)
    greedy = model.generate(**kwargs, max_new_tokens=6, do_sample=False)
    assert greedy.shape[0] == 3


def test_captioning_refuses_placeholders_and_mismatched_images():
    model = make(VLMixerForCaptioning)
    inputs = caption_inputs()
    with pytest.raises(ValueError, match="no visual placeholders"):
        model(**dict(inputs, input_ids=inputs["input_ids"].masked_fill(inputs["input_ids"] == 5, IMG)))
    with pytest.raises(ValueError, match="3 captions but 2 images"):
        model(**dict(inputs, visual_features=inputs["visual_features"][:2], visual_boxes=None, region_mask=None))


# ---------------------------------------------------------------------------------------------- the (B, L, L) mask


def test_per_example_mask_equals_the_padding_mask_and_agrees_across_attention_kernels():
    torch.manual_seed(0)
    sdpa = VLMixerModel(tiny_config()).eval()
    batch = tiny_batch(sdpa.config)
    keys = batch["attention_mask"]
    reference = sdpa(**batch).last_hidden_state
    as_pairs = keys[:, None, :].expand(-1, 8, -1)
    torch.testing.assert_close(sdpa(**dict(batch, attention_mask=as_pairs)).last_hidden_state, reference)
    torch.testing.assert_close(sdpa(**dict(batch, attention_mask=as_pairs[:, None])).last_hidden_state, reference)
    causal = as_pairs & torch.tril(torch.ones(8, 8, dtype=torch.long))
    eager = VLMixerModel(tiny_config()).eval()
    eager.load_state_dict(sdpa.state_dict())
    eager.set_attn_implementation("eager")
    got_sdpa = sdpa(**dict(batch, attention_mask=causal)).last_hidden_state
    torch.testing.assert_close(
        eager(**dict(batch, attention_mask=causal)).last_hidden_state, got_sdpa, atol=1e-5, rtol=1e-4
    )
    first_four = [0, 2]  # the placeholders among the first 4 tokens
    truncated = dict(batch, input_ids=batch["input_ids"][:, :4], attention_mask=causal[:, :4, :4],
                     visual_features=batch["visual_features"][first_four],
                     visual_boxes=batch["visual_boxes"][first_four])  # fmt: skip
    torch.testing.assert_close(sdpa(**truncated).last_hidden_state, got_sdpa[:, :4], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\(2, 8, 8\)"):
        sdpa(**dict(batch, attention_mask=causal[:, :7]))
    with pytest.raises(ValueError, match="at least one key"):
        sdpa(**dict(batch, attention_mask=causal * 0))


# ---------------------------------------------------------------------------------------------- save and load


def head_inputs(model):
    if isinstance(model, VLMixerForVisualReasoning):
        return nlvr_batch(model.config)
    if isinstance(model, (VLMixerForImageTextRetrieval, VLMixerForCaptioning)):
        return caption_inputs()
    return tiny_batch(model.config)


@pytest.mark.parametrize(
    "cls, auto",
    [
        (VLMixerForQuestionAnswering, AutoModelForVisualQuestionAnswering),
        (VLMixerForSequenceClassification, AutoModelForSequenceClassification),
        (VLMixerForCaptioning, AutoModelForImageTextToText),
        (VLMixerForImageTextRetrieval, None),
        (VLMixerForVisualReasoning, None),
    ],
)
def test_save_and_reload_gives_identical_logits(cls, auto, tmp_path):
    model = make(cls)
    model.config.id2label = {i: f"answer {i}" for i in range(5)}
    model.save_pretrained(tmp_path)
    reloaded = (auto or cls).from_pretrained(tmp_path).eval()
    assert type(reloaded) is cls and reloaded.config.id2label[3] == "answer 3"
    inputs = head_inputs(model)
    torch.testing.assert_close(reloaded(**inputs).logits, model(**inputs).logits, atol=0, rtol=0)
    auto_map = reloaded.config.auto_map
    assert auto_map["AutoModel"] == "modeling_vlmixer.VLMixerModel"  # a head without Auto class does not take it over
    if auto is not None:
        assert auto_map[auto.__name__] == f"modeling_vlmixer.{cls.__name__}"
    assert (tmp_path / "modeling_vlmixer.py").exists() and (tmp_path / "configuration_vlmixer.py").exists()
    if cls is VLMixerForCaptioning:
        features, boxes, region_mask = images()
        kwargs = dict(visual_features=features, visual_boxes=boxes, region_mask=region_mask, max_new_tokens=4)
        torch.testing.assert_close(reloaded.generate(**kwargs), model.generate(**kwargs))


@pytest.fixture(scope="module")
def pretraining_folder(tmp_path_factory):
    torch.manual_seed(0)
    model = VLMixerForPreTraining(tiny_config())
    folder = tmp_path_factory.mktemp("pretrained")
    model.save_pretrained(folder)
    return folder, model.state_dict()


@pytest.mark.parametrize(
    "cls, new_modules",
    [
        (VLMixerForQuestionAnswering, {"classifier"}),
        (VLMixerForSequenceClassification, {"classifier"}),
        (VLMixerForVisualReasoning, {"classifier"}),
        (VLMixerForImageTextRetrieval, set()),
        (VLMixerForCaptioning, set()),
    ],
)
def test_a_pretraining_checkpoint_loads_into_every_head(cls, new_modules, pretraining_folder):
    folder, pretrained = pretraining_folder
    model, info = cls.from_pretrained(folder, output_loading_info=True)
    assert {key.split(".")[0] for key in info["missing_keys"]} == new_modules
    state = model.state_dict()
    shared = [key for key in state if key in pretrained]
    assert all(key.startswith(("vlmixer.", "contrastive.", "matching.", "cls.")) for key in shared)
    assert "vlmixer.encoder.layer.1.output.dense.weight" in shared
    if cls is not VLMixerForCaptioning:
        assert "vlmixer.pooler.dense.weight" in shared  # trained by image-text matching in pre-training
    if cls is VLMixerForImageTextRetrieval:
        assert {"contrastive.logit_scale", "matching.classifier.weight"} <= set(shared)
    for key in shared:
        torch.testing.assert_close(state[key], pretrained[key], atol=0, rtol=0, msg=key)


def test_a_captioner_from_a_pretraining_folder_starts_captions_with_cls(pretraining_folder):
    """The folder has no generation_config.json: the one derived from its config has no start token."""
    model = VLMixerForCaptioning.from_pretrained(pretraining_folder[0])
    config = model.generation_config
    assert (config.bos_token_id, config.eos_token_id, config.use_cache) == (model.config.cls_token_id, model.config.sep_token_id, False)


# ---------------------------------------------------------------------------------------------- Trainer


class RowsDataset(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return self.rows[index]


def vqa_rows(count: int, seed: int = 0):
    """Questions `[CLS] w w [SEP] regions [SEP]` whose answer is set by the first word; 1-3 regions each."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        word, regions = int(rng.integers(10, 15)), int(rng.integers(1, 4))
        scores = np.zeros(5, dtype=np.float32)
        scores[word - 10] = 1.0
        rows.append({"ids": [CLS, word, 20, SEP] + [IMG] * regions + [SEP],
                     "features": rng.normal(size=(regions, 16)).astype(np.float32), "labels": scores})  # fmt: skip
    return rows


def vqa_collator(rows):
    length = max(len(row["ids"]) for row in rows)
    ids = torch.tensor([row["ids"] + [0] * (length - len(row["ids"])) for row in rows])
    return {
        "input_ids": ids,
        "attention_mask": (ids != 0).long(),
        "visual_features": torch.from_numpy(np.concatenate([row["features"] for row in rows])),
        "labels": torch.from_numpy(np.stack([row["labels"] for row in rows])),
    }


def test_trainer_fine_tunes_the_question_answering_head(tmp_path):
    model = make(VLMixerForQuestionAnswering).train()
    before = model.classifier[0].weight.detach().clone()
    arguments = TrainingArguments(output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=4,
                                  per_device_eval_batch_size=4, learning_rate=5e-3, logging_steps=1, report_to="none",
                                  use_cpu=True, save_strategy="no", remove_unused_columns=False, seed=0)  # fmt: skip
    trainer = Trainer(model=model, args=arguments, train_dataset=RowsDataset(vqa_rows(16)),
                      eval_dataset=RowsDataset(vqa_rows(6, seed=1)), data_collator=vqa_collator)  # fmt: skip
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert not torch.equal(model.classifier[0].weight.detach(), before)
    predictions = trainer.predict(RowsDataset(vqa_rows(6, seed=1)))
    assert predictions.predictions.shape == (6, 5) and predictions.label_ids.shape == (6, 5)
    assert math.isfinite(predictions.metrics["test_loss"])
