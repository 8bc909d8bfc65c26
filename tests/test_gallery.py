"""PatchGallery: storage round trip, memory mapping, O(1) seeded sampling, and refusals of bad galleries."""

import json
import os

import numpy as np
import pytest

from processing import gallery as gallery_module
from processing.gallery import GALLERY_CONFIG_NAME, GALLERY_WEIGHTS_NAME, GalleryError, PatchGallery, PatchGalleryBuilder


FEATURE_DIM = 8


def rows(count: int, seed: int, thumbnails: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    corners = rng.uniform(0, 0.5, (count, 2))
    part = {
        "features": rng.normal(size=(count, FEATURE_DIM)).astype(np.float32),
        "boxes": np.concatenate([corners, corners + 0.5], axis=1),
        "image_ids": rng.integers(0, 10_000, count),
        "scores": rng.uniform(0.5, 1.0, count),
    }
    if thumbnails:
        part["thumbnails"] = rng.integers(0, 256, (count, 4, 4, 3), dtype=np.uint8)
    return part


@pytest.fixture
def builder() -> PatchGalleryBuilder:
    """Interleaved adds: dog, cat, dog again, bird."""
    builder = PatchGalleryBuilder("efficientnet-lite0", FEATURE_DIM)
    for seed, (concept, count) in enumerate([("dog", 5), ("cat", 3), ("dog", 4), ("bird", 1)]):
        builder.add(concept, **rows(count, seed))
    return builder


def test_interleaved_adds_are_grouped_by_concept(builder):
    gallery = builder.build()
    assert gallery.concepts == ["dog", "cat", "bird"]
    assert gallery.counts == {"dog": 9, "cat": 3, "bird": 1} and len(gallery) == 13
    dog_rows = np.concatenate([rows(5, 0)["features"], rows(4, 2)["features"]]).astype(np.float16)
    np.testing.assert_array_equal(gallery.features[:9], dog_rows)
    assert "dog" in gallery and "unicorn" not in gallery


def test_save_and_load_round_trip_is_memory_mapped(builder, tmp_path):
    built = builder.save(tmp_path)
    loaded = PatchGallery.load(tmp_path, expected_backbone="efficientnet-lite0", expected_feature_dim=FEATURE_DIM)
    assert isinstance(loaded.features, np.memmap) and isinstance(loaded.boxes, np.memmap)
    assert (loaded.concepts, loaded.counts, loaded.backbone) == (built.concepts, built.counts, built.backbone)
    for name in ("features", "boxes", "image_ids", "scores"):
        np.testing.assert_array_equal(np.asarray(getattr(loaded, name)), getattr(built, name), err_msg=name)
    assert loaded.features.dtype == np.float16
    metadata = json.loads((tmp_path / GALLERY_CONFIG_NAME).read_text())
    assert metadata["counts"] == {"dog": 9, "cat": 3, "bird": 1} and metadata["format_version"] == 1
    assert sorted(os.listdir(tmp_path)) == [GALLERY_CONFIG_NAME, GALLERY_WEIGHTS_NAME]


def test_thumbnails_are_stored_and_returned(tmp_path):
    builder = PatchGalleryBuilder("efficientnet-lite0", FEATURE_DIM)
    part = rows(3, 0, thumbnails=True)
    builder.add("dog", **part)
    loaded = PatchGallery.load(builder.save(tmp_path) and tmp_path)
    np.testing.assert_array_equal(loaded.thumbnails_at(np.array([2, 0])), part["thumbnails"][[2, 0]])
    with pytest.raises(GalleryError, match="thumbnails for every add or for none"):
        builder.add("cat", **rows(2, 1))


def test_sampling_is_seeded_and_stays_in_the_concept(builder):
    gallery = builder.build()
    concepts = ["cat", "dog", "bird", "dog"] * 50
    first = gallery.sample(concepts, np.random.default_rng(7))
    again = gallery.sample(concepts, np.random.default_rng(7))
    other = gallery.sample(concepts, np.random.default_rng(8))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    owner = np.repeat(gallery.concepts, list(gallery.counts.values()))
    assert list(owner[first]) == concepts


def test_sampling_is_uniform_over_a_concepts_rows(builder):
    gallery = builder.build()
    draws = gallery.sample(["dog"] * 90_000, np.random.default_rng(0))
    frequencies = np.bincount(draws, minlength=9) / len(draws)
    np.testing.assert_allclose(frequencies, 1 / 9, atol=0.01)


def test_features_and_boxes_at_return_float32_rows(builder):
    gallery = builder.build()
    indices = np.array([12, 0, 12])
    features = gallery.features_at(indices)
    assert features.dtype == np.float32 and features.shape == (3, FEATURE_DIM)
    np.testing.assert_array_equal(features[0], features[2])
    np.testing.assert_array_equal(gallery.boxes_at(indices)[1], gallery.boxes[0].astype(np.float32))


def test_unknown_or_empty_concepts_cannot_be_sampled(builder):
    gallery = builder.build()
    with pytest.raises(KeyError, match="unicorn"):
        gallery.sample(["dog", "unicorn"], np.random.default_rng(0))


def test_summary_names_every_concept(builder):
    summary = builder.build().summary()
    assert "efficientnet-lite0" in summary and all(name in summary for name in ("dog", "cat", "bird"))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(features=np.zeros((2, FEATURE_DIM + 1))), r"shape \(N, 8\)"),
        (dict(features=np.full((2, FEATURE_DIM), np.nan)), "NaN or infinite"),
        (dict(boxes=np.array([[0.0, 0.0, 1.5, 1.0]] * 2)), r"in \[0, 1\]"),
        (dict(boxes=np.array([[0.5, 0.0, 0.2, 1.0]] * 2)), "x2 < x1"),
        (dict(image_ids=np.arange(3)), "need 2 entries"),
    ],
)
def test_bad_rows_are_refused(change, message):
    builder = PatchGalleryBuilder("efficientnet-lite0", FEATURE_DIM)
    with pytest.raises(GalleryError, match=message):
        builder.add("dog", **{**rows(2, 0), **change})


def test_empty_gallery_and_empty_concept_name_are_refused():
    builder = PatchGalleryBuilder("efficientnet-lite0", FEATURE_DIM)
    with pytest.raises(GalleryError, match="empty"):
        builder.build()
    with pytest.raises(GalleryError, match="non-empty string"):
        builder.add(" ", **rows(1, 0))


def test_backbone_and_feature_size_mismatches_are_refused(builder, tmp_path):
    builder.save(tmp_path)
    with pytest.raises(GalleryError, match="built with 'efficientnet-lite0' but the model expects 'auto:vit'"):
        PatchGallery.load(tmp_path, expected_backbone="auto:vit")
    with pytest.raises(GalleryError, match="8-d features but the model expects 1280"):
        PatchGallery.load(tmp_path, expected_feature_dim=1280)


def test_truncated_and_corrupt_files_are_refused(builder, tmp_path):
    builder.save(tmp_path)
    weights = tmp_path / GALLERY_WEIGHTS_NAME
    content = weights.read_bytes()
    weights.write_bytes(content[:-10])
    with pytest.raises(GalleryError, match="truncated"):
        PatchGallery.load(tmp_path)
    weights.write_bytes(content[:8] + b"\xff" * 40 + content[48:])
    with pytest.raises(GalleryError, match="corrupt"):
        PatchGallery.load(tmp_path)
    weights.write_bytes(content)
    (tmp_path / GALLERY_CONFIG_NAME).write_text("{")
    with pytest.raises(GalleryError, match="corrupt"):
        PatchGallery.load(tmp_path)


def test_missing_files_and_unknown_versions_are_refused(builder, tmp_path):
    with pytest.raises(GalleryError, match="gallery.json is missing"):
        PatchGallery.load(tmp_path)
    builder.save(tmp_path)
    config = json.loads((tmp_path / GALLERY_CONFIG_NAME).read_text())
    (tmp_path / GALLERY_CONFIG_NAME).write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(GalleryError, match="format_version 99"):
        PatchGallery.load(tmp_path)
    (tmp_path / GALLERY_CONFIG_NAME).write_text(json.dumps({**config, "num_rows": 14}))
    with pytest.raises(GalleryError, match="describes 14 x 8"):
        PatchGallery.load(tmp_path)


def test_interrupted_save_leaves_no_loadable_half_gallery(builder, tmp_path, monkeypatch):
    builder.save(tmp_path)
    real_replace = os.replace

    def fail_on_the_json(source, target):
        if str(target).endswith(GALLERY_CONFIG_NAME):
            raise KeyboardInterrupt("killed while saving")
        real_replace(source, target)

    monkeypatch.setattr(gallery_module.os, "replace", fail_on_the_json)
    other = PatchGalleryBuilder("efficientnet-lite0", FEATURE_DIM)
    other.add("fish", **rows(2, 5))
    with pytest.raises(KeyboardInterrupt):
        other.save(tmp_path)
    monkeypatch.undo()
    with pytest.raises(GalleryError, match="gallery.json is missing"):
        PatchGallery.load(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [GALLERY_WEIGHTS_NAME]  # no temporary files left


def test_merge_concatenates_rows_and_refuses_other_backbones(builder):
    first = builder.build()
    second_builder = PatchGalleryBuilder("efficientnet-lite0", FEATURE_DIM)
    second_builder.add("cat", **rows(2, 9))
    second_builder.add("fish", **rows(1, 10))
    merged = PatchGallery.merge([first, second_builder.build()])
    assert merged.counts == {"dog": 9, "cat": 5, "bird": 1, "fish": 1}
    vit = PatchGalleryBuilder("auto:vit", FEATURE_DIM)
    vit.add("dog", **rows(1, 0))
    with pytest.raises(GalleryError, match="Cannot merge a 'auto:vit' gallery"):
        PatchGallery.merge([first, vit.build()])
