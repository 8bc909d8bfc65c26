"""The VLMixer encoder and its masked-LM head: equivalences, round trips and clear errors."""

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, BertModel

from vlmixer.modeling_vlmixer import VLMixerConfig, VLMixerForMaskedLM, VLMixerModel

from .conftest import tiny_batch, tiny_config


@pytest.fixture
def tiny_mlm():
    torch.manual_seed(0)
    return VLMixerForMaskedLM(tiny_config()).eval()


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(hidden_size=100, num_attention_heads=12), "divisible"),
        (dict(num_hidden_layers=-1), "num_hidden_layers"),
        (dict(visual_feature_dim=0), "visual_feature_dim"),
        (dict(vision_backbone="resnet-50"), "Unknown `vision_backbone`"),
        (dict(vision_backbone="efficientnet-lite0", visual_feature_dim=512), "1280"),
        (dict(vision_backbone="auto"), "vision_config"),
        (dict(vision_backbone="auto", vision_config={"model_type": "vit", "hidden_size": 768}), "768"),
        (dict(image_token_id=10**6), "image_token_id"),
        (dict(visual_box_dim=5), "visual_box_dim"),
        (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob"),
        (dict(classifier_dropout=1.0), "classifier_dropout"),
        (dict(sep_token_id=500), "sep_token_id"),
        (dict(cls_token_id=1), "three different tokens"),
        (dict(momentum_queue_size=-1), "momentum_queue_size"),
        (dict(momentum_coefficient=1.0), "momentum_coefficient"),
    ],
)
def test_invalid_config_raises_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_presets_have_the_documented_shapes():
    base, small = VLMixerConfig.from_preset("vlmixer-base"), VLMixerConfig.from_preset("vlmixer-small")
    assert (base.hidden_size, base.num_hidden_layers, base.num_attention_heads) == (768, 12, 12)
    assert (small.hidden_size, small.num_hidden_layers, small.intermediate_size) == (384, 6, 1536)
    with pytest.raises(ValueError, match="Unknown VLMixer preset"):
        VLMixerConfig.from_preset("vlmixer-huge")


def test_backbone_id_names_the_feature_source():
    assert VLMixerConfig().backbone_id == "efficientnet-lite0"
    assert tiny_config().backbone_id == "precomputed:test-features"


# ---------------------------------------------------------------------------------------------- forward


def test_outputs_have_documented_shapes(tiny_mlm):
    batch = tiny_batch(tiny_mlm.config)
    outputs = tiny_mlm(**batch, output_hidden_states=True, output_attentions=False)
    assert outputs.logits.shape == (2, 8, tiny_mlm.config.vocab_size)
    assert len(outputs.hidden_states) == tiny_mlm.config.num_hidden_layers + 1
    base = tiny_mlm.vlmixer
    assert base(**batch).last_hidden_state.shape == (2, 8, 32)


def test_visual_features_change_the_output_but_padding_does_not(tiny_mlm):
    batch = tiny_batch(tiny_mlm.config)
    reference = tiny_mlm(**batch).logits

    other_patches = dict(batch, visual_features=batch["visual_features"] + 1.0)
    assert not torch.allclose(tiny_mlm(**other_patches).logits, reference, atol=1e-3)

    other_padding = dict(batch, input_ids=batch["input_ids"].clone())
    other_padding["input_ids"][1, 6:] = 55  # content under attention_mask == 0
    torch.testing.assert_close(tiny_mlm(**other_padding).logits[1, :6], reference[1, :6], atol=1e-5, rtol=1e-5)


def test_visual_boxes_change_the_output(tiny_mlm):
    batch = tiny_batch(tiny_mlm.config)
    moved = dict(batch, visual_boxes=batch["visual_boxes"].flip(0))
    assert not torch.allclose(tiny_mlm(**moved).logits, tiny_mlm(**batch).logits, atol=1e-3)


def test_sentence_alone_equals_sentence_in_padded_batch(tiny_mlm):
    batch = tiny_batch(tiny_mlm.config)
    together = tiny_mlm(**batch).logits
    alone = tiny_mlm(
        input_ids=batch["input_ids"][1:, :6],
        attention_mask=batch["attention_mask"][1:, :6],
        visual_features=batch["visual_features"][2:],
        visual_boxes=batch["visual_boxes"][2:],
    ).logits
    torch.testing.assert_close(alone[0], together[1, :6], atol=1e-5, rtol=1e-5)


def test_sdpa_and_eager_attention_agree():
    torch.manual_seed(0)
    config = tiny_config()
    sdpa = VLMixerForMaskedLM(tiny_config()).eval()
    eager = VLMixerForMaskedLM(tiny_config()).eval()
    eager.load_state_dict(sdpa.state_dict())
    eager.set_attn_implementation("eager")
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    batch = tiny_batch(config)
    torch.testing.assert_close(eager(**batch).logits, sdpa(**batch).logits, atol=1e-5, rtol=1e-4)
    attentions = eager(**batch, output_attentions=True).attentions
    assert len(attentions) == config.num_hidden_layers and attentions[0].shape == (2, 4, 8, 8)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    config = tiny_config()
    batch = tiny_batch(config)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)

    def gradients(model):
        model.train()
        model.zero_grad()
        model(**batch, labels=labels).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    plain = VLMixerForMaskedLM(config)
    checkpointed = VLMixerForMaskedLM(config)
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.activation_checkpointing_enable()
    assert checkpointed.is_activation_checkpointing
    expected, got = gradients(plain), gradients(checkpointed)
    assert expected.keys() == got.keys() and "vlmixer.embeddings.visual.feature_projection.weight" in got
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-5, msg=name)


def test_decoder_is_tied_and_follows_resize_token_embeddings(tiny_mlm):
    decoder = tiny_mlm.get_output_embeddings()
    assert decoder.weight.data_ptr() == tiny_mlm.vlmixer.embeddings.word_embeddings.weight.data_ptr()
    tiny_mlm.resize_token_embeddings(130)
    assert tiny_mlm.config.vocab_size == 130
    assert tiny_mlm.get_output_embeddings().weight.shape == (130, 32)
    assert tiny_mlm.get_output_embeddings().weight.data_ptr() == tiny_mlm.get_input_embeddings().weight.data_ptr()
    logits = tiny_mlm(**tiny_batch(tiny_mlm.config)).logits
    assert logits.shape[-1] == 130


# ---------------------------------------------------------------------------------------------- clear errors


def test_placeholder_count_mismatch_is_refused(tiny_mlm):
    batch = tiny_batch(tiny_mlm.config)
    with pytest.raises(ValueError, match="3 visual placeholders .* but 2 visual features"):
        tiny_mlm(**dict(batch, visual_features=batch["visual_features"][:2], visual_boxes=batch["visual_boxes"][:2]))
    with pytest.raises(ValueError, match="3 visual placeholders .* but 0 visual features"):
        tiny_mlm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


def test_wrong_feature_size_is_refused(tiny_mlm):
    batch = tiny_batch(tiny_mlm.config)
    with pytest.raises(ValueError, match=r"shape \(num_visual_tokens, 16\).*precomputed:test-features"):
        tiny_mlm(**dict(batch, visual_features=torch.randn(3, 17)))


def test_non_finite_features_and_boxes_are_refused(tiny_mlm):
    batch = tiny_batch(tiny_mlm.config)
    features = batch["visual_features"].clone()
    features[1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        tiny_mlm(**dict(batch, visual_features=features))
    boxes = batch["visual_boxes"].clone()
    boxes[0, 0] = float("inf")
    with pytest.raises(ValueError, match="visual_boxes` contain NaN"):
        tiny_mlm(**dict(batch, visual_boxes=boxes))
    with pytest.raises(ValueError, match=r"visual_boxes` must have shape \(3, 4\)"):
        tiny_mlm(**dict(batch, visual_boxes=boxes[:2]))


def test_pixel_values_need_a_backbone(tiny_mlm):
    batch = tiny_batch(tiny_mlm.config)
    with pytest.raises(ValueError, match="precomputed"):
        tiny_mlm(input_ids=batch["input_ids"], pixel_values=torch.zeros(3, 3, 32, 32))


def test_missing_boxes_mean_whole_images(tiny_mlm):
    batch = tiny_batch(tiny_mlm.config)
    whole = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(3, 4)
    without_boxes = {key: value for key, value in batch.items() if key != "visual_boxes"}
    torch.testing.assert_close(tiny_mlm(**without_boxes).logits, tiny_mlm(**dict(batch, visual_boxes=whole)).logits)


# ---------------------------------------------------------------------------------------------- save / load


def test_save_and_load_round_trip_gives_identical_outputs(tiny_mlm, tmp_path):
    tiny_mlm.save_pretrained(tmp_path)
    auto_map = AutoConfig.from_pretrained(tmp_path).auto_map
    assert auto_map["AutoModel"] == "modeling_vlmixer.VLMixerModel"
    assert auto_map["AutoModelForMaskedLM"] == "modeling_vlmixer.VLMixerForMaskedLM"
    for code_file in ("configuration_vlmixer.py", "modeling_vlmixer.py", "efficientnet_lite.py"):
        assert (tmp_path / code_file).exists(), code_file

    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    assert type(reloaded) is VLMixerForMaskedLM
    batch = tiny_batch(tiny_mlm.config)
    torch.testing.assert_close(reloaded(**batch).logits, tiny_mlm(**batch).logits, atol=0, rtol=0)
    base = AutoModel.from_pretrained(tmp_path)
    assert type(base) is VLMixerModel


def test_from_pretrained_by_literal_folder_name(tiny_mlm, tmp_path, monkeypatch):
    tiny_mlm.save_pretrained(tmp_path / "vlmixer-base")
    monkeypatch.chdir(tmp_path)
    model = AutoModel.from_pretrained("vlmixer-base")
    assert type(model) is VLMixerModel


# ---------------------------------------------------------------------------------------------- BERT initialisation


def test_from_bert_pretrained_matches_bert_on_text(minilm_path):
    bert = BertModel.from_pretrained(minilm_path).eval()
    ours = VLMixerModel.from_bert_pretrained(minilm_path).eval()
    assert ours.config.hidden_size == 384 and ours.config.num_hidden_layers == 6
    input_ids = torch.tensor([[101, 1037, 4937, 7771, 2006, 1037, 13781, 1012, 102], [101, 1037, 3899, 102, 0, 0, 0, 0, 0]])
    attention_mask = (input_ids != 0).long()
    expected = bert(input_ids=input_ids, attention_mask=attention_mask)
    got = ours(input_ids=input_ids, attention_mask=attention_mask)
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, atol=1e-5, rtol=0)


def test_from_bert_pretrained_refuses_another_shape(minilm_path):
    with pytest.raises(Exception, match="size mismatch|not a BERT checkpoint"):
        VLMixerModel.from_bert_pretrained(minilm_path, load_backbone=False, hidden_size=768, num_attention_heads=12)


def test_any_transformers_vision_model_can_be_the_backbone(tmp_path):
    from transformers import ViTConfig

    vision = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32,
                       patch_size=16)  # fmt: skip
    config = tiny_config(vision_backbone="auto", vision_config=vision.to_dict(), visual_feature_dim=32,
                         feature_source=None)  # fmt: skip
    assert config.backbone_id.startswith("auto:")
    torch.manual_seed(0)
    model = VLMixerForMaskedLM(config).eval()
    assert not any(p.requires_grad for p in model.vlmixer.vision_backbone.parameters())
    batch = tiny_batch(config)
    pixels = torch.randn(3, 3, 32, 32)
    from_pixels = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=pixels,
                        visual_boxes=batch["visual_boxes"]).logits  # fmt: skip
    features = model.vlmixer.get_visual_features(pixels)
    assert features.shape == (3, 32)
    from_features = model(**dict(batch, visual_features=features)).logits
    torch.testing.assert_close(from_pixels, from_features)
    model.save_pretrained(tmp_path)
    reloaded = VLMixerForMaskedLM.from_pretrained(tmp_path).eval()
    reloaded_logits = reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=pixels,
                               visual_boxes=batch["visual_boxes"]).logits  # fmt: skip
    torch.testing.assert_close(reloaded_logits, from_pixels)
    with pytest.raises(ValueError, match="either `visual_features` or `pixel_values`"):
        model(**dict(batch, pixel_values=pixels))
