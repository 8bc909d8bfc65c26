"""Issue 12: what transformers' common test suites ask of every model, checked on VLMixer with our own tests.

Output flags and `return_dict` on every head, CLIP-style feature getters, generation settings and inputs, placeholders
found from `inputs_embeds`, shifted captioning labels, clear errors for malformed inputs (non-finite features were
refused before: tests/test_modeling.py), and a processor that follows v5's `ProcessingKwargs`.
"""

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vlmixer.modeling_vlmixer import (
    VLMixerConfig,
    VLMixerForCaptioning,
    VLMixerForImageTextRetrieval,
    VLMixerForPreTraining,
    VLMixerModel,
)

from .conftest import tiny_batch, tiny_config


CLS, SEP, IMG = 101, 102, 1


def make(model_class, **overrides):
    torch.manual_seed(0)
    return model_class(tiny_config(**overrides)).eval()


def region_batch(batch_size=3, num_regions=4, dim=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch_size, num_regions, dim, generator=generator)
    boxes = torch.tensor([0.1, 0.1, 0.6, 0.7]).expand(batch_size, num_regions, 4).clone()
    return features, boxes


def captions(batch_size=3):
    ids = torch.tensor([[CLS, 7, 8, 9, SEP], [CLS, 10, 11, SEP, 0], [CLS, 12, SEP, 0, 0]])[:batch_size]
    return ids, (ids != 0).long()


# ---------------------------------------------------------------------------------------------- output flags


def test_pretraining_returns_hidden_states_attentions_and_tuples():
    model = make(VLMixerForPreTraining, attn_implementation="eager")  # sdpa returns no attention weights
    batch = tiny_batch(model.config)
    labels = torch.full_like(batch["input_ids"], -100)
    labels[0, 1] = 7
    outputs = model(**batch, labels=labels, output_hidden_states=True, output_attentions=True)
    assert len(outputs.hidden_states) == model.config.num_hidden_layers + 1
    assert outputs.hidden_states[-1].shape == (*batch["input_ids"].shape, 32)
    assert len(outputs.attentions) == model.config.num_hidden_layers
    assert outputs.attentions[0].shape == (2, 4, 8, 8)
    as_tuple = model(**batch, labels=labels, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], outputs.loss)
    with pytest.raises(TypeError, match="unexpected inputs"):
        model(**batch, labels=labels, not_an_input=1)


def test_retrieval_returns_hidden_states_of_the_matching_pass_and_tuples():
    model = make(VLMixerForImageTextRetrieval, attn_implementation="eager")
    ids, mask = captions()
    features, boxes = region_batch()
    outputs = model(ids, mask, features, boxes, output_hidden_states=True, output_attentions=True)
    pair_length = ids.shape[1] + features.shape[1] + 1  # [CLS] text [SEP] regions [SEP]
    assert len(outputs.hidden_states) == 3 and outputs.hidden_states[0].shape == (3, pair_length, 32)
    assert len(outputs.attentions) == 2 and outputs.attentions[0].shape == (3, 4, pair_length, pair_length)
    as_tuple = model(ids, mask, features, boxes, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], outputs.logits)


def test_heads_follow_config_return_dict_false():
    model = make(VLMixerForImageTextRetrieval, return_dict=False)
    ids, mask = captions()
    features, boxes = region_batch()
    assert isinstance(model(ids, mask, features, boxes), tuple)
    # the feature getters and internal calls do not break either
    assert isinstance(model.get_text_features(ids, mask), tuple)
    assert isinstance(model.get_image_features(features, boxes), tuple)
    assert model.sentence_embeddings(input_ids=ids, attention_mask=mask).shape == (3, 16)


# ---------------------------------------------------------------------------------------------- feature getters


def test_feature_getters_return_model_outputs_with_the_unit_embeddings_as_pooler_output():
    model = make(VLMixerForImageTextRetrieval, attn_implementation="eager")
    ids, mask = captions()
    features, boxes = region_batch()
    text = model.get_text_features(ids, mask, output_hidden_states=True, output_attentions=True)
    assert isinstance(text, BaseModelOutputWithPooling)
    assert text.last_hidden_state.shape == (3, ids.shape[1], 32)
    assert len(text.hidden_states) == 3 and len(text.attentions) == 2
    torch.testing.assert_close(text.pooler_output, model.sentence_embeddings(input_ids=ids, attention_mask=mask))
    torch.testing.assert_close(text.pooler_output.norm(dim=-1), torch.ones(3))
    image = model.get_image_features(features, boxes)
    assert isinstance(image, BaseModelOutputWithPooling)
    assert image.last_hidden_state.shape == (3, features.shape[1] + 2, 32)  # [CLS] regions [SEP]
    torch.testing.assert_close(image.pooler_output, model(ids, mask, features, boxes).image_embeds)


def test_config_has_a_text_config_view_and_generation_token_fields():
    config = tiny_config()
    assert config.text_config is config and config.get_text_config() is config
    assert config.text_config.vocab_size == 120
    assert config.bos_token_id is None and config.eos_token_id is None
    reloaded = VLMixerConfig.from_dict(tiny_config(bos_token_id=5, eos_token_id=[6, 7]).to_dict())
    assert (reloaded.bos_token_id, reloaded.eos_token_id) == (5, [6, 7])
    with pytest.raises(ValueError, match="eos_token_id"):
        tiny_config(eos_token_id=500)


# ---------------------------------------------------------------------------------------------- inputs_embeds


def test_inputs_embeds_with_visual_features_equal_input_ids():
    model = make(VLMixerModel)
    batch = tiny_batch(model.config)
    from_ids = model(**batch).last_hidden_state
    embeds = model.get_input_embeddings()(batch["input_ids"])
    inputs = {**batch, "input_ids": None, "inputs_embeds": embeds}
    torch.testing.assert_close(model(**inputs).last_hidden_state, from_ids)
    with pytest.raises(ValueError, match="inputs_embeds.*3 visual placeholders"):
        model(**{**inputs, "visual_features": batch["visual_features"][:2], "visual_boxes": None})


# ---------------------------------------------------------------------------------------------- captioning


def test_captioning_shift_labels_give_the_loss_of_labels():
    model = make(VLMixerForCaptioning)
    ids, mask = captions()
    features, boxes = region_batch()
    labels = ids.masked_fill(mask == 0, -100)
    expected = model(ids, mask, features, boxes, labels=labels).loss
    shifted = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], -100)], dim=1)
    torch.testing.assert_close(model(ids, mask, features, boxes, shift_labels=shifted).loss, expected)


def test_generation_passes_forward_inputs_on_and_never_emits_special_tokens():
    model = make(VLMixerForCaptioning, attn_implementation="eager")
    features, boxes = region_batch(batch_size=2)
    prepared = model.prepare_inputs_for_generation(
        torch.tensor([[CLS], [CLS]]), visual_features=features, output_attentions=True, past_key_values=object()
    )
    assert prepared["output_attentions"] is True and "past_key_values" not in prepared
    # a head biased towards the placeholder, [CLS] and padding still never generates them
    with torch.no_grad():
        model.cls.predictions.bias[[IMG, CLS, 0]] += 100.0
    out = model.generate(visual_features=features, visual_boxes=boxes, max_new_tokens=5, do_sample=False)
    generated = out[:, 1:]
    assert not bool(((generated == IMG) | (generated == CLS)).any())
    assert not bool((generated == 0).any()) or bool((generated == SEP).any())  # padding only after [SEP]
    beams = model.generate(visual_features=features, max_new_tokens=3, num_beams=2, suppress_tokens=[5])
    assert not bool(((beams[:, 1:] == IMG) | (beams[:, 1:] == 5)).any())


def test_prepare_inputs_for_generation_passes_every_other_keyword_on():
    """As `GenerationMixin.prepare_inputs_for_generation` (transformers' generation suite checks it): any keyword reaches
    `forward`, model-specific ones included; only the cache inputs (no cache), `position_ids` (forward numbers the
    image part and the caption itself) and training targets stay behind."""
    model = make(VLMixerForCaptioning)
    features, _ = region_batch(batch_size=2)
    ids = torch.tensor([[CLS, 7, 8], [CLS, 9, 10]])
    passed_on = {"output_attentions": True, "output_hidden_states": True, "custom_arg": "test_value", "numeric_arg": 42}
    held_back = {"position_ids": torch.arange(3).expand(2, -1), "labels": ids, "shift_labels": ids,
                 "past_key_values": object(), "use_cache": True, "cache_position": torch.arange(3)}  # fmt: skip
    prepared = model.prepare_inputs_for_generation(ids, visual_features=features, **passed_on, **held_back)
    assert prepared["input_ids"] is ids and prepared["visual_features"] is features
    for name, value in passed_on.items():
        assert prepared[name] == value
    assert not set(held_back) & set(prepared)
    with torch.no_grad():  # forward takes what was passed on
        assert model(**prepared).logits.shape == (2, 3, model.config.vocab_size)


def test_generate_dict_outputs_cover_the_image_part_at_every_step():
    """What the generation suite's dict-output checks read: one score and one logit row per new token, and per step
    hidden states and attentions over `[CLS] regions [SEP]` plus the caption so far (no cache: the whole prefix)."""
    model = make(VLMixerForCaptioning, attn_implementation="eager")
    features, boxes = region_batch(batch_size=2, num_regions=4)
    ids = torch.tensor([[CLS, 7, 8], [CLS, 9, 10]])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), visual_features=features,
                         visual_boxes=boxes, max_new_tokens=3, min_new_tokens=3, do_sample=False,
                         return_dict_in_generate=True, output_scores=True, output_logits=True,
                         output_hidden_states=True, output_attentions=True)  # fmt: skip
    assert out.sequences.shape == (2, 6)
    assert len(out.scores) == len(out.logits) == 3
    image_part = 4 + 2
    for step, (hidden, attentions) in enumerate(zip(out.hidden_states, out.attentions)):
        length = image_part + 3 + step
        assert [h.shape for h in hidden] == [(2, length, 32)] * (model.config.num_hidden_layers + 1)
        assert [a.shape for a in attentions] == [(2, 4, length, length)] * model.config.num_hidden_layers


# ---------------------------------------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b: b.update(input_ids=b["input_ids"].masked_fill(b["input_ids"] == 7, 500)), "outside the vocabulary"),
        (lambda b: b.update(input_ids=b["input_ids"].masked_fill(b["input_ids"] == 7, -3)), "outside the vocabulary"),
        (lambda b: b.update(visual_boxes=b["visual_boxes"] * 224), r"normalised .* in \[0, 1\]"),
        (lambda b: b.update(visual_boxes=b["visual_boxes"] - 0.5), r"normalised .* in \[0, 1\]"),
        (lambda b: b.update(input_ids=b["input_ids"][:0], attention_mask=b["attention_mask"][:0]), "empty batch"),
    ],
)
def test_malformed_inputs_get_clear_errors(change, message):
    model = make(VLMixerModel)
    batch = tiny_batch(model.config)
    change(batch)
    with pytest.raises(ValueError, match=message):
        model(**batch)


def test_sequences_longer_than_the_position_table_are_refused():
    model = make(VLMixerModel)
    too_long = torch.full((1, 65), 7)
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        model(input_ids=too_long)
    with pytest.raises(ValueError, match="position_ids"):
        model(input_ids=too_long[:, :4], position_ids=torch.tensor([[0, 1, 2, 64]]))
    model(input_ids=too_long[:, :64])  # the longest allowed runs


# ---------------------------------------------------------------------------------------------- torch.compile


def test_fullgraph_compile_of_the_model_equals_eager_and_eager_still_validates():
    """
    `torch.compile(model, fullgraph=True)` traces the forward in one graph: the checks that read tensor values are
    skipped while compiling (as in transformers' models) and the visual tokens are scattered by `masked_scatter`.
    Text-only inputs, visual tokens, and (automatic dynamic shapes) a second sequence length.
    """
    model = make(VLMixerModel)
    visual = tiny_batch(model.config)
    text_only = dict(input_ids=torch.tensor([[CLS, 7, 8, 9, SEP, 0], [CLS, 10, 11, 12, 13, SEP]]),
                     attention_mask=torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]]))  # fmt: skip
    longer = dict(visual, input_ids=torch.cat([visual["input_ids"], visual["input_ids"][:, :3]], dim=1),
                  attention_mask=torch.cat([visual["attention_mask"], torch.ones(2, 3, dtype=torch.long)], dim=1),
                  visual_features=torch.cat([visual["visual_features"], visual["visual_features"][:1]]),
                  visual_boxes=torch.cat([visual["visual_boxes"], visual["visual_boxes"][:1]]))  # a 4th placeholder  # fmt: skip
    one_placeholder_less = visual["input_ids"].clone()
    one_placeholder_less[0, 2] = 9
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    try:
        with torch.no_grad():
            for inputs in (text_only, visual, longer):
                expected, got = model(**inputs), compiled(**inputs)
                torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(got.pooler_output, expected.pooler_output, atol=1e-5, rtol=1e-5)
            with pytest.raises(RuntimeError):  # the count is unchecked when compiling, but masked_scatter runs short
                compiled(**dict(visual, visual_features=visual["visual_features"][:2],
                                visual_boxes=visual["visual_boxes"][:2]))  # fmt: skip
    finally:
        torch._dynamo.reset()
    # Eager mode still checks values, with clear messages.
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(**dict(visual, input_ids=visual["input_ids"].masked_fill(visual["input_ids"] == 7, 500)))
    with pytest.raises(ValueError, match="2 visual placeholders"):
        model(**dict(visual, input_ids=one_placeholder_less))


# ---------------------------------------------------------------------------------------------- processor


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


def make_processor(tokenizer, **settings):
    from vlmixer.processing.processing_vlmixer import VLMixerProcessor, efficientnet_image_processor

    return VLMixerProcessor(tokenizer, efficientnet_image_processor(32), cmc_ratio=0.0, **settings)


def an_image():
    from PIL import Image

    return Image.fromarray((torch.arange(40 * 50 * 3) % 251).reshape(40, 50, 3).numpy().astype("uint8"))


def test_processor_takes_v5_processing_kwargs(tokenizer):
    from vlmixer.processing.processing_vlmixer import VLMixerProcessor, VLMixerProcessorKwargs

    assert VLMixerProcessor.valid_processor_kwargs is VLMixerProcessorKwargs
    processor = make_processor(tokenizer)
    plain = processor(text=["a dog"], images=[an_image()])
    assert isinstance(plain["pixel_values"], torch.Tensor)
    # the image processor's options, flat or nested, reach it
    raw = processor(text=["a dog"], images=[an_image()], do_normalize=False, do_rescale=False)
    nested = processor(text=["a dog"], images=[an_image()], images_kwargs={"do_normalize": False, "do_rescale": False})
    assert float(raw["pixel_values"].max()) > 2.0  # 0..255 values, neither rescaled nor normalised
    torch.testing.assert_close(raw["pixel_values"], nested["pixel_values"])
    # the tokenizer's options and CMC's own settings are keyword arguments of one kwargs class
    as_numpy = processor(text="a dog on a bed", max_length=4, return_tensors="np", padding=True, cmc_ratio=0.0, seed=1)
    assert as_numpy["input_ids"].shape == (1, 4) and not isinstance(as_numpy["input_ids"], torch.Tensor)


def test_processor_model_input_names_are_what_an_image_text_call_returns(tokenizer):
    processor = make_processor(tokenizer)
    assert set(processor(text=["a dog"], images=[an_image()])) == set(processor.model_input_names)


def test_processor_save_and_load_is_a_round_trip(tokenizer, tmp_path):
    from vlmixer.processing.processing_vlmixer import VLMixerProcessor

    processor = make_processor(tokenizer, grid_size=3, max_position_embeddings=40)
    before = processor.to_dict()
    processor.save_pretrained(tmp_path)
    assert processor.to_dict() == before and "auto_map" not in before
    reloaded = VLMixerProcessor.from_pretrained(tmp_path)
    assert reloaded.to_json_string() == processor.to_json_string()  # JSON: tuples and lists compare equal
    assert reloaded.max_length == 40


def test_processor_truncates_to_the_model_not_to_a_tokenizer_without_a_limit(tokenizer):
    import copy

    unlimited = copy.deepcopy(tokenizer)
    assert make_processor(tokenizer)(text=" ".join(["dog"] * 700))["input_ids"].shape == (1, 128)  # its max_length
    unlimited.model_max_length = int(1e30)  # what a tokenizer saved without model_max_length reports
    unlimited.init_kwargs.pop("max_length", None)
    long_text = " ".join(["dog"] * 700)
    assert make_processor(unlimited)(text=long_text)["input_ids"].shape == (1, 512)
    assert make_processor(unlimited, max_position_embeddings=64)(text=long_text)["input_ids"].shape == (1, 64)
    assert make_processor(unlimited)(text=long_text, max_length=20)["input_ids"].shape == (1, 20)


# ---------------------------------------------------------------------------------------------- determinism (round 2)


def test_retrieval_eval_loss_is_deterministic_and_training_still_samples_hard_negatives():
    model = make(VLMixerForImageTextRetrieval)  # tiny_config has no dropout: only the negatives' draw can vary
    ids = torch.tensor([[CLS, 7, 8, SEP], [CLS, 9, 10, SEP], [CLS, 11, 12, SEP], [CLS, 13, 14, SEP]])
    mask = torch.ones_like(ids)
    features, boxes = region_batch(batch_size=4)

    def losses_over_seeds():
        losses = set()
        for seed in range(12):
            torch.manual_seed(seed)
            with torch.no_grad():
                losses.add(round(float(model(ids, mask, features, boxes, return_loss=True).loss), 6))
        return losses

    assert len(losses_over_seeds()) == 1  # eval: the most similar negative, no draw
    model.train()
    # training: negatives drawn from softmax(similarity), as ALBEF, with a generator seeded by the global batch's
    # content (so that N processes draw what one process draws): the same batch, the same draw; other batches differ
    assert len(losses_over_seeds()) == 1
    drawn_differently = 0
    for seed in range(8):
        features, boxes = region_batch(batch_size=4, seed=seed)
        with torch.no_grad():
            model.train()
            trained = float(model(ids + seed % 3, mask, features, boxes, return_loss=True).loss)
            model.eval()
            evaluated = float(model(ids + seed % 3, mask, features, boxes, return_loss=True).loss)
        drawn_differently += abs(trained - evaluated) > 1e-6
    assert drawn_differently > 0


def test_eval_hard_negatives_are_the_most_similar_allowed_ones():
    similarity = torch.tensor([[9.0, 1.0, 3.0], [0.0, 9.0, -1.0], [2.0, 5.0, 9.0]])
    same = torch.eye(3, dtype=torch.bool)
    assert VLMixerForImageTextRetrieval._draw(similarity, same, sample=False).tolist() == [2, 0, 1]
    everything = torch.ones(3, 3, dtype=torch.bool)
    assert VLMixerForImageTextRetrieval._draw(similarity, everything, sample=False).tolist() == [-1, -1, -1]


def test_retrieval_training_reaches_every_head_with_matched_pairs():
    model = make(VLMixerForImageTextRetrieval).train()
    ids, mask = captions()
    features, boxes = region_batch()
    model(ids, mask, features, boxes, return_loss=True).loss.backward()
    without_gradient = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert without_gradient == []


def test_retrieval_takes_texts_padded_at_the_start():
    model = make(VLMixerForImageTextRetrieval)
    right, right_mask = captions()
    lengths = right_mask.sum(dim=1)
    left = torch.zeros_like(right)
    for row, length in enumerate(lengths.tolist()):
        left[row, right.shape[1] - length :] = right[row, :length]
    left_mask = (left != 0).long()
    features, boxes = region_batch()
    with torch.no_grad():
        expected = model(right, right_mask, features, boxes)
        got = model(left, left_mask, features, boxes)
    for name in ("logits", "logits_per_text", "text_embeds", "image_embeds"):
        torch.testing.assert_close(getattr(got, name), getattr(expected, name))


@pytest.mark.parametrize("model_class_name", ["VLMixerForVisualReasoning", "VLMixerForImageTextRetrieval"])
def test_heads_give_the_same_outputs_with_eager_and_sdpa_attention(model_class_name):
    from vlmixer import modeling_vlmixer

    model_class = getattr(modeling_vlmixer, model_class_name)
    eager = make(model_class, attn_implementation="eager")
    sdpa = make(model_class, attn_implementation="sdpa")
    ids, mask = captions()
    if model_class_name == "VLMixerForVisualReasoning":
        statement = torch.tensor([[CLS, 7, IMG, 9, SEP], [CLS, 10, IMG, SEP, 0]])
        ids = statement.unsqueeze(1).expand(-1, 2, -1)
        inputs = {"input_ids": ids, "attention_mask": (ids != 0).long(), "visual_features": torch.randn(4, 16)}
        key = "logits"
    else:
        features, boxes = region_batch()
        inputs = {"input_ids": ids, "attention_mask": mask, "visual_features": features, "visual_boxes": boxes}
        key = "logits_per_text"
    with torch.no_grad():
        torch.testing.assert_close(getattr(eager(**inputs), key), getattr(sdpa(**inputs), key), atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- processor (round 2)


def test_processor_pads_to_max_length_when_asked(tokenizer):
    processor = make_processor(tokenizer)
    pairs = processor(text=["a dog", "a cat on a mat"], images=[an_image(), an_image()], padding="max_length",
                      max_length=30)  # fmt: skip
    assert pairs["input_ids"].shape == pairs["token_type_ids"].shape == (2, 30)
    assert int(pairs["attention_mask"][0].sum()) == 4 + 5 + 1  # [CLS] a dog [SEP], 5 regions, [SEP]
    mixed = processor(text=["a dog"], padding="max_length", max_length=12)
    for name in ("input_ids", "attention_mask", "position_ids", "patch_word_labels", "original_input_ids"):
        assert mixed[name].shape == (1, 12), name
    assert processor(text=["a dog"], max_length=12)["input_ids"].shape == (1, 4)  # longest by default
    # a tokenizer's own defaults (padding / max_length given when it was made) are honoured
    import copy

    padding_tokenizer = copy.deepcopy(tokenizer)
    padding_tokenizer.init_kwargs.update(padding="max_length", max_length=17)
    assert make_processor(padding_tokenizer)(text=["a dog"])["input_ids"].shape == (1, 17)


def test_processor_takes_a_list_of_images_per_text_and_texts_without_images(tokenizer):
    processor = make_processor(tokenizer)
    image = an_image()
    flat = processor(text=["a dog", "a cat"], images=[image, image])
    nested = processor(text=["a dog", "a cat"], images=[[image], [image]])
    for name in flat:
        torch.testing.assert_close(flat[name], nested[name])
    mixed = processor(text=["a bird", "a cat"], images=[[], [image]])
    bird = tokenizer("a bird")["input_ids"]
    assert mixed["input_ids"][0, : len(bird)].tolist() == bird and int(mixed["attention_mask"][0].sum()) == len(bird)
    torch.testing.assert_close(mixed["input_ids"][1], flat["input_ids"][1])
    assert len(mixed["pixel_values"]) == len(mixed["visual_boxes"]) == 5  # the cat's image only
    two = processor(text=["two dogs"], images=[[image, image]])
    assert int((two["input_ids"] == processor.image_token_id).sum()) == 10
    with pytest.raises(ValueError, match="None of the texts"):
        processor(text=["a"], images=[[]])


def test_processor_text_call_at_cmc_ratio_zero_is_the_tokenizer(tokenizer):
    processor = make_processor(tokenizer)
    texts = ["a dog on a bed", "two cats"]
    ours, theirs = processor(text=texts, cmc_ratio=0.0), tokenizer(texts, padding=True, return_tensors="pt")
    torch.testing.assert_close(ours["input_ids"], theirs["input_ids"])
    torch.testing.assert_close(ours["attention_mask"], theirs["attention_mask"])


def test_saved_image_processor_settings_carry_no_auto_map(tokenizer, tmp_path):
    import json

    from transformers import AutoImageProcessor

    processor = make_processor(tokenizer)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["auto_map"] == {"AutoProcessor": "processing_vlmixer.VLMixerProcessor"}  # what AutoProcessor reads
    assert "auto_map" not in saved["image_processor"]
    reloaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert repr(reloaded) == repr(processor.image_processor)
