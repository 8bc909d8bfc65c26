"""VLMixerProcessor: cross-modal CutMix as method.md specifies it, image-text encoding, saving, collators."""

import json
import textwrap

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, AutoTokenizer

from vlmixer.modeling_vlmixer import VLMixerModel
from vlmixer.processing import ConceptVocabulary, DataCollatorForCMC, PatchGalleryBuilder, VLMixerProcessor
from vlmixer.processing.processing_vlmixer import efficientnet_image_processor

from .conftest import run_isolated_python, tiny_config


GALLERY_CONCEPTS = ["person", "dog", "horse", "frisbee", "teddy bear", "cat"]  # not "bed": never replaced
FEATURE_DIM = 16
SENTENCES = [
    "A man riding a horse with his dog.",
    "A teddy bear on the bed.",
    "The stock market closed higher on Friday.",
    "Two dogs catch a frisbee while a cat watches.",
]


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="module")
def gallery():
    builder = PatchGalleryBuilder("precomputed:test-features", FEATURE_DIM)
    rng = np.random.default_rng(0)
    for concept in GALLERY_CONCEPTS:
        builder.add(concept, rng.normal(size=(4, FEATURE_DIM)), np.tile([0.1, 0.2, 0.6, 0.9], (4, 1)),
                    np.arange(4), np.ones(4), rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8))  # fmt: skip
    return builder.build()


@pytest.fixture
def processor(tokenizer, gallery):
    return VLMixerProcessor(
        tokenizer,
        efficientnet_image_processor(64),
        cmc_ratio=1.0,
        backbone_id="precomputed:test-features",
        concepts=ConceptVocabulary.coco80(),
        gallery=gallery,
    )


def words(tokenizer, ids) -> list[str]:
    return tokenizer.convert_ids_to_tokens([int(i) for i in ids if i != tokenizer.pad_token_id])


# ---------------------------------------------------------------------------------------------- CMC


def test_every_grounded_word_becomes_one_visual_token_at_ratio_one(processor, tokenizer):
    batch = processor(text=SENTENCES, cmc_ratio=1.0, seed=0)
    assert words(tokenizer, batch["input_ids"][0]) == [
        "[CLS]", "a", "[unused0]", "riding", "a", "[unused0]", "with", "his", "[unused0]", ".", "[SEP]",
    ]  # fmt: skip
    # "teddy bear" (two word pieces) becomes one visual token; "bed" has no patches and stays a word.
    assert words(tokenizer, batch["input_ids"][1]) == ["[CLS]", "a", "[unused0]", "on", "the", "bed", ".", "[SEP]"]
    assert int((batch["input_ids"] == processor.image_token_id).sum()) == len(batch["visual_features"]) == 7
    assert batch["visual_features"].shape == (7, FEATURE_DIM) and batch["visual_boxes"].shape == (7, 4)
    concepts = [ConceptVocabulary.coco80().labels[i] for i in batch["patch_concept_ids"]]
    assert concepts == ["person", "horse", "dog", "teddy bear", "dog", "frisbee", "cat"]


def test_visual_token_keeps_the_position_of_its_first_word_piece(processor, tokenizer):
    batch = processor(text=["A teddy bear on the bed."], seed=0)
    original = words(tokenizer, batch["original_input_ids"][0])
    assert original[2:4] == ["teddy", "bear"]
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 4, 5, 6, 7, 8]


def test_patch_word_labels_hold_the_replaced_word(processor, tokenizer):
    batch = processor(text=SENTENCES[:2], seed=0)
    labels = batch["patch_word_labels"]
    placeholders = batch["input_ids"] == processor.image_token_id
    assert bool((labels[~placeholders] == -100).all())
    assert tokenizer.convert_ids_to_tokens(labels[placeholders].tolist()) == ["man", "horse", "dog", "teddy"]


def test_original_view_is_the_plain_tokenization(processor, tokenizer):
    batch = processor(text=SENTENCES, seed=0)
    plain = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    torch.testing.assert_close(batch["original_input_ids"], plain["input_ids"])
    torch.testing.assert_close(batch["original_attention_mask"], plain["attention_mask"])


@pytest.mark.parametrize("sentences, ratio", [(SENTENCES, 0.0), (["The stock market closed higher."], 1.0)])
def test_mixed_view_equals_the_original_without_replacements(processor, sentences, ratio):
    batch = processor(text=sentences, cmc_ratio=ratio, seed=0)
    torch.testing.assert_close(batch["input_ids"], batch["original_input_ids"])
    assert batch["visual_features"].shape == (0, FEATURE_DIM)
    assert batch["position_ids"][0, : batch["attention_mask"][0].sum()].tolist() == list(range(int(batch["attention_mask"][0].sum())))


def test_same_seed_same_mix_other_seed_other_mix(processor):
    sentences = SENTENCES * 8
    first = processor(text=sentences, cmc_ratio=0.5, seed=3)
    again = processor(text=sentences, cmc_ratio=0.5, seed=3)
    other = processor(text=sentences, cmc_ratio=0.5, seed=4)
    for key in ("input_ids", "visual_features", "patch_gallery_indices"):
        torch.testing.assert_close(first[key], again[key])
    assert not torch.equal(first["input_ids"], other["input_ids"])
    from_torch = processor(text=sentences, cmc_ratio=0.5, generator=torch.Generator().manual_seed(1))
    from_torch_again = processor(text=sentences, cmc_ratio=0.5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(from_torch["input_ids"], from_torch_again["input_ids"])


def test_a_generator_passed_in_advances_from_call_to_call(processor):
    """The collators pass one running generator: each call must draw on from where the last one stopped (a copy
    made while merging the call's options used to replay the same draws for every batch, a fifth fewer patches)."""
    generator = np.random.default_rng(0)
    state = generator.bit_generator.state["state"]["state"]
    first = processor(text=SENTENCES * 8, cmc_ratio=0.5, generator=generator)
    assert generator.bit_generator.state["state"]["state"] != state
    second = processor(text=SENTENCES * 8, cmc_ratio=0.5, generator=generator)
    assert not torch.equal(first["patch_gallery_indices"], second["patch_gallery_indices"])


def test_cmc_ratio_is_the_replacement_probability(processor):
    batch = processor(text=SENTENCES * 250, cmc_ratio=0.25, seed=0)
    candidates = 7 * 250  # grounded words with patches per copy of SENTENCES
    assert abs(len(batch["visual_features"]) / candidates - 0.25) < 0.03


def test_truncation_never_separates_a_placeholder_from_its_feature(processor):
    long_sentence = "A dog and a cat and a horse and a frisbee and a man " * 6
    for max_length in (5, 9, 14, 40):
        batch = processor(text=[long_sentence, "A dog."], seed=0, max_length=max_length)
        assert batch["input_ids"].shape[1] <= max_length
        assert batch["original_input_ids"].shape[1] <= max_length
        assert int((batch["input_ids"] == processor.image_token_id).sum()) == len(batch["visual_features"])


def test_mixed_batch_runs_through_the_model_and_matches_single_sentences(processor):
    torch.manual_seed(0)
    model = VLMixerModel(tiny_config(vocab_size=30522, max_position_embeddings=128)).eval()
    batch = processor(text=SENTENCES, seed=5)
    model_inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids", "visual_features", "visual_boxes")}
    together = model(**model_inputs).last_hidden_state
    patches_before = 0
    for index, sentence in enumerate(SENTENCES):
        placeholders = int((batch["input_ids"][index] == processor.image_token_id).sum())
        length = int(batch["attention_mask"][index].sum())
        alone = model(
            input_ids=batch["input_ids"][index : index + 1, :length],
            position_ids=batch["position_ids"][index : index + 1, :length],
            visual_features=batch["visual_features"][patches_before : patches_before + placeholders],
            visual_boxes=batch["visual_boxes"][patches_before : patches_before + placeholders],
        ).last_hidden_state
        torch.testing.assert_close(alone[0], together[index, :length], atol=1e-5, rtol=1e-5)
        patches_before += placeholders


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "text, error, message",
    [
        ("", ValueError, "empty"),
        ([], ValueError, "empty list"),
        (["a dog", "   "], ValueError, r"text\[1\] is empty"),
        (["a dog", 3], TypeError, r"text\[1\] is a int"),
        (None, ValueError, "`text` is required"),
    ],
)
def test_bad_text_is_refused(processor, text, error, message):
    with pytest.raises(error, match=message):
        processor(text=text)


def test_cmc_without_a_gallery_is_refused_but_ratio_zero_works(tokenizer):
    processor = VLMixerProcessor(tokenizer, efficientnet_image_processor(64))
    with pytest.raises(ValueError, match="needs a concept vocabulary and a patch gallery"):
        processor(text="a dog")
    assert processor(text="a dog", cmc_ratio=0.0)["input_ids"].shape == (1, 4)
    with pytest.raises(ValueError, match=r"`cmc_ratio` must be in \[0, 1\]"):
        processor(text="a dog", cmc_ratio=1.5)


def test_gallery_from_another_backbone_is_refused(tokenizer, gallery):
    with pytest.raises(ValueError, match="built with backbone 'precomputed:test-features' but the model reads 'efficientnet-lite0'"):
        VLMixerProcessor(tokenizer, efficientnet_image_processor(64), backbone_id="efficientnet-lite0", gallery=gallery)


def test_seed_and_generator_together_are_refused(processor):
    with pytest.raises(ValueError, match="either `seed` or `generator`"):
        processor(text="a dog", seed=1, generator=np.random.default_rng(1))


# ---------------------------------------------------------------------------------------------- image-text pairs


def test_image_text_pairs_append_regions_after_the_text(processor, tokenizer):
    from skimage import data

    boxes = [[[0.0, 0.0, 1.0, 1.0], [0.2, 0.1, 0.7, 0.9]]]
    batch = processor(text=["a cat"], images=[data.chelsea()], boxes=boxes)
    assert words(tokenizer, batch["input_ids"][0]) == ["[CLS]", "a", "cat", "[SEP]", "[unused0]", "[unused0]", "[SEP]"]
    assert batch["token_type_ids"][0].tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert batch["pixel_values"].shape == (2, 3, 64, 64)
    torch.testing.assert_close(batch["visual_boxes"], torch.tensor(boxes[0]))


def test_images_without_boxes_use_the_whole_image_and_a_grid(processor):
    grey = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    batch = processor(text=["a bag", "two sneakers and a bag"], images=[grey, grey])
    assert batch["pixel_values"].shape == (2 * 5, 3, 64, 64)
    assert int((batch["input_ids"] == processor.image_token_id).sum()) == 10
    torch.testing.assert_close(batch["visual_boxes"][1], torch.tensor([0.0, 0.0, 0.5, 0.5]))


@pytest.mark.parametrize(
    "boxes, message",
    [
        ([[[0.0, 0.0, 1.2, 1.0]]], r"normalised to \[0, 1\]"),
        ([[[0.5, 0.0, 0.5, 1.0]]], "x2 <= x1"),
        ([[]], "non-empty"),
        ([[[0.0, 0.0, 1.0, 1.0]], [[0.0, 0.0, 1.0, 1.0]]], "1 images but 2 box lists"),
    ],
)
def test_bad_boxes_are_refused(processor, boxes, message):
    image = np.zeros((10, 10, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=message):
        processor(text=["a cat"], images=[image], boxes=boxes)


def test_mismatched_image_count_and_corrupt_images_are_refused(processor):
    with pytest.raises(ValueError, match="2 texts but 1 images"):
        processor(text=["a", "b"], images=[np.zeros((4, 4, 3), np.uint8)])
    with pytest.raises(TypeError, match="PIL images or numpy arrays"):
        processor(text=["a"], images=[b"\x89PNG broken"])


# ---------------------------------------------------------------------------------------------- saving


def test_save_and_auto_processor_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    settings = json.loads((tmp_path / "processor_config.json").read_text())
    assert (tmp_path / "processor_config.json").stat().st_size < 4000
    assert settings["cmc_ratio"] == 1.0 and settings["backbone_id"] == "precomputed:test-features"
    assert "gallery" not in settings and "concepts" not in settings
    assert {"gallery.safetensors", "gallery.json", "concepts.json"} <= {p.name for p in tmp_path.iterdir()}

    tmp_path.joinpath("config.json").write_text(tiny_config().to_json_string())
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(reloaded) is VLMixerProcessor and len(reloaded.patch_gallery) == len(processor.patch_gallery)
    first, second = processor(text=SENTENCES, cmc_ratio=0.5, seed=11), reloaded(text=SENTENCES, cmc_ratio=0.5, seed=11)
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], msg=key)


def test_saved_processor_loads_as_remote_code(processor, tmp_path):
    processor.save_pretrained(tmp_path / "checkpoint")
    tmp_path.joinpath("checkpoint", "config.json").write_text(
        json.dumps({**tiny_config().to_dict(), "auto_map": {"AutoProcessor": "processing_vlmixer.VLMixerProcessor"}})
    )
    expected = processor(text=SENTENCES, cmc_ratio=0.5, seed=2)
    code = textwrap.dedent(
        f"""
        import torch
        from transformers import AutoProcessor
        processor = AutoProcessor.from_pretrained("checkpoint", trust_remote_code=True)
        batch = processor(text={SENTENCES!r}, cmc_ratio=0.5, seed=2)
        torch.save(dict(batch), "batch.pt")
        print(type(processor).__module__)
        """
    )
    result = run_isolated_python(code, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().startswith("transformers_modules.")
    got = torch.load(tmp_path / "batch.pt", weights_only=True)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], msg=key)


# ---------------------------------------------------------------------------------------------- collator


def test_collator_masks_only_text_tokens_and_resumes_exactly(processor):
    rows = [{"text": sentence} for sentence in SENTENCES * 4]
    collator = DataCollatorForCMC(processor, cmc_ratio=0.5, mlm_probability=0.3, seed=0)
    first = collator(rows)
    state = collator.state_dict()
    second = collator(rows)
    resumed = DataCollatorForCMC(processor, cmc_ratio=0.5, mlm_probability=0.3, seed=99)
    resumed.load_state_dict(state)
    torch.testing.assert_close(resumed(rows)["input_ids"], second["input_ids"])
    torch.testing.assert_close(DataCollatorForCMC(processor, cmc_ratio=0.5, mlm_probability=0.3, seed=0)(rows)["labels"], first["labels"])

    labelled = first["labels"] != -100
    assert labelled.any()
    special = torch.tensor(processor.tokenizer.all_special_ids + [processor.image_token_id])
    assert not torch.isin(first["labels"][labelled], special).any()
    assert not (labelled & (first["attention_mask"] == 0)).any()
    changed = first["input_ids"] != torch.where(labelled, first["labels"], first["input_ids"])
    assert changed.sum() <= labelled.sum()


def test_rejected_spans_are_never_mixed_by_the_processor_nor_the_collator(processor):
    text = "a dog and a cat on the couch"  # "dog" is text[2:5], "cat" text[12:15]
    mixed = processor(text=[text], cmc_ratio=1.0, seed=0, rejected_spans=[[[2, 5]]])
    concepts = [ConceptVocabulary.coco80().labels[i] for i in mixed["patch_concept_ids"]]
    assert concepts == ["cat"]  # the couch has no gallery patches; the dog was rejected
    rows = [{"text": text, "sense_rejected": [[2, 5]]}, {"text": text, "sense_rejected": []}]
    for keys in (None, [(0, 0, 0), (0, 0, 1)]):
        batch = DataCollatorForCMC(processor, cmc_ratio=1.0, mlm_probability=0.15, seed=0)(rows, keys)
        assert (batch["input_ids"] == processor.image_token_id).sum(1).tolist() == [1, 2]
    with pytest.raises(ValueError, match="1 entries for 2 sentences"):
        processor(text=[text, text], cmc_ratio=1.0, seed=0, rejected_spans=[[]])


def test_the_grounding_report_counts_kept_and_rejected_words_by_reason(processor):
    text = ["A dog and a cat on the couch.", "We will train the dog, bear in mind.", "The stock market fell."]
    report = processor.grounding_report(text, rejected_spans=[[[12, 15]], [], []])  # the cat of the first
    assert report == {"sentences": 3, "mixable_sentences": 2, "kept": 3,
                      "kept_per_concept": {"dog": 2, "couch": 1}, "rejected": 3,
                      "rejected_by_reason": {"context model": 1, "verb": 1, "excluded phrase": 1}}  # fmt: skip


def test_collator_names_a_missing_column(processor):
    with pytest.raises(KeyError, match="no 'text' column"):
        DataCollatorForCMC(processor)([{"sentence": "a dog"}])


# ---------------------------------------------------------------------------------------------- the CMC picture


def test_cmc_picture_shows_each_patch_thumbnail_where_its_word_was(processor, tmp_path):
    from PIL import Image

    from vlmixer.processing.visualize import THUMBNAIL_PX, mixed_pieces, render_mixed_sentences

    pieces = mixed_pieces(processor, "A teddy bear on the bed.", seed=0, cmc_ratio=1.0)
    assert [p.word or p.concept for p in pieces] == ["a", "teddy bear", "on", "the", "bed", "."]
    path = tmp_path / "cmc.png"
    render_mixed_sentences(processor, ["A teddy bear on the bed.", "Nothing grounded here."], path)
    picture = np.asarray(Image.open(path).convert("RGB"))
    thumbnail = np.asarray(Image.fromarray(pieces[1].thumbnail).resize((THUMBNAIL_PX, THUMBNAIL_PX), Image.NEAREST))
    # the thumbnail's interior (its frame is drawn over the border) is pasted somewhere on the first mixed line
    inner = slice(2, THUMBNAIL_PX - 2)
    found = any(
        np.array_equal(picture[top : top + THUMBNAIL_PX, left : left + THUMBNAIL_PX][inner, inner], thumbnail[inner, inner])
        for top in range(30, 60)
        for left in range(16, 200)
    )
    assert found


# ---------------------------------------------------------------------------------------------- prompts with <image>


def test_image_markers_place_each_region_in_the_text(processor, tokenizer):
    features = [np.ones((1, FEATURE_DIM)), np.stack([np.full(FEATURE_DIM, v) for v in (1.0, 2.0, 3.0)])]
    boxes = [[[0, 0, 1, 1]], [[0, 0, 0.3, 1], [0.3, 0, 0.6, 1], [0.6, 0, 1, 1]]]
    batch = processor(text=["a photo of a <image>.", "a picture showing <image>, <image> and <image>."],
                      region_features=features, boxes=boxes)  # fmt: skip
    assert words(tokenizer, batch["input_ids"][0]) == ["[CLS]", "a", "photo", "of", "a", "[unused0]", ".", "[SEP]"]
    assert words(tokenizer, batch["input_ids"][1]).count("[unused0]") == 3
    assert batch["token_type_ids"].sum() == 0
    torch.testing.assert_close(batch["visual_features"][1:, 0], torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="2 <image> markers but 1 regions"):
        processor(text=["<image> and <image>"], region_features=[np.ones((1, FEATURE_DIM))])


def test_region_features_are_checked(processor):
    with pytest.raises(ValueError, match="NaN or infinite"):
        processor(text=["a dog"], region_features=[np.full((1, FEATURE_DIM), np.nan)])
    with pytest.raises(ValueError, match="one box per row"):
        processor(text=["a dog"], region_features=[np.ones((2, FEATURE_DIM))], boxes=[[[0, 0, 1, 1]]])
    with pytest.raises(ValueError, match="either `images` or `region_features`"):
        processor(text=["a dog"], images=[np.zeros((8, 8, 3), np.uint8)], region_features=[np.ones((1, FEATURE_DIM))])


def test_random_replacement_never_makes_a_visual_placeholder():
    """BERT's 10% random tokens once drew [unused0] and a pair batch then had one placeholder more than features."""
    import torch

    from vlmixer.processing.collators import mask_tokens

    generator = torch.Generator().manual_seed(0)
    ids = torch.full((64, 64), 2000)
    masked, _ = mask_tokens(ids, torch.ones_like(ids, dtype=torch.bool), 103, 3, 1.0, generator, image_token_id=1)
    assert not (masked == 1).any() and (masked == 103).any() and (masked == 2).any()
