"""PatchGallery: storage round trip, memory mapping, O(1) seeded sampling, atomic saves, refusals of bad galleries."""

import json
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from vlmixer.processing import gallery as gallery_module
from vlmixer.processing.gallery import (
    GALLERY_CONFIG_NAME,
    GALLERY_WEIGHTS_NAME,
    GalleryError,
    PatchGallery,
    PatchGalleryBuilder,
)


BACKBONE = "efficientnet-lite0"
FEATURE_DIM = 8
THUMBNAIL = 4
# Interleaved adds: dog, cat, dog again, bird.
ADDS = [("dog", 5), ("cat", 3), ("dog", 4), ("bird", 1)]


def rows(count: int, seed: int, thumbnails: bool = False, feature_dim: int = FEATURE_DIM) -> dict:
    rng = np.random.default_rng(seed)
    corners = rng.uniform(0, 0.5, (count, 2))
    part = {
        "features": rng.normal(size=(count, feature_dim)).astype(np.float32),
        "boxes": np.concatenate([corners, corners + rng.uniform(0, 0.5, (count, 2))], axis=1),
        "image_ids": rng.integers(0, 10_000, count),
        "scores": rng.uniform(0.5, 1.0, count),
    }
    if thumbnails:
        part["thumbnails"] = rng.integers(0, 256, (count, THUMBNAIL, THUMBNAIL, 3), dtype=np.uint8)
    return part


def concept_of_rows(gallery: PatchGallery, indices: np.ndarray) -> list[str]:
    """The concept that owns each row, from the offsets alone."""
    owners = np.searchsorted(gallery.concept_offsets, indices, side="right") - 1
    return [gallery.concepts[owner] for owner in owners]


@pytest.fixture
def builder() -> PatchGalleryBuilder:
    builder = PatchGalleryBuilder(BACKBONE, FEATURE_DIM, thumbnail_size=THUMBNAIL)
    for seed, (concept, count) in enumerate(ADDS):
        builder.add(concept, **rows(count, seed, thumbnails=True))
    return builder


@pytest.fixture
def saved(builder, tmp_path) -> str:
    builder.save(tmp_path)
    return str(tmp_path)


def expected_rows(name: str) -> dict[str, np.ndarray]:
    """Column `name` of each concept as the adds gave it, in add order."""
    parts = {}
    for seed, (concept, count) in enumerate(ADDS):
        parts.setdefault(concept, []).append(rows(count, seed, thumbnails=True)[name])
    return {concept: np.concatenate(chunks) for concept, chunks in parts.items()}


# ---------------------------------------------------------------------------------------------- building and storage


def test_interleaved_adds_are_grouped_by_concept(builder):
    gallery = builder.build()
    assert gallery.concepts == ["dog", "cat", "bird"]
    assert gallery.counts == {"dog": 9, "cat": 3, "bird": 1} and len(gallery) == 13
    np.testing.assert_array_equal(gallery.concept_offsets, [0, 9, 12, 13])
    for name in ("features", "boxes", "image_ids", "scores", "thumbnails"):
        for concept, expected in expected_rows(name).items():
            start = gallery.concept_offsets[gallery.concepts.index(concept)]
            stored = getattr(gallery, name)[start : start + len(expected)]
            np.testing.assert_array_equal(stored, expected.astype(stored.dtype), err_msg=f"{concept} {name}")


def test_save_and_load_round_trip(builder, tmp_path):
    built = builder.build()
    builder.save(tmp_path)
    loaded = PatchGallery.load(tmp_path, expected_backbone=BACKBONE, expected_feature_dim=FEATURE_DIM)
    assert (loaded.concepts, loaded.counts, loaded.backbone) == (built.concepts, built.counts, BACKBONE)
    assert (len(loaded), loaded.feature_dim, loaded.thumbnail_size, loaded.dtype) == (13, 8, 4, np.float16)
    for name in ("boxes", "image_ids", "scores", "thumbnails", "concept_offsets"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(built, name), err_msg=name)
    originals = np.concatenate(list(expected_rows("features").values()))
    np.testing.assert_allclose(np.asarray(loaded.features, np.float32), originals, rtol=1e-3, atol=1e-4)
    config = json.loads((tmp_path / GALLERY_CONFIG_NAME).read_text())
    assert config["counts"] == {"dog": 9, "cat": 3, "bird": 1}
    assert {key: config[key] for key in ("format_version", "num_rows", "dtype", "thumbnail_size")} == {
        "format_version": 1, "num_rows": 13, "dtype": "float16", "thumbnail_size": 4,
    }  # fmt: skip
    assert sorted(os.listdir(tmp_path)) == [GALLERY_CONFIG_NAME, GALLERY_WEIGHTS_NAME]


def test_saved_file_is_standard_safetensors(saved):
    """The reference reader (used by scripts/evaluate_zero_shot.py) reads what the hand-written writer wrote."""
    gallery = PatchGallery.load(saved)
    tensors = load_file(os.path.join(saved, GALLERY_WEIGHTS_NAME))
    assert set(tensors) == {"features", "boxes", "image_ids", "scores", "concept_offsets", "thumbnails"}
    for name, array in tensors.items():
        np.testing.assert_array_equal(array, getattr(gallery, name), err_msg=name)
        assert array.dtype == getattr(gallery, name).dtype


def test_a_loaded_gallery_saves_again(saved, tmp_path):
    """`PatchGallery.save` on a memory-mapped gallery, also over the very files it maps."""
    loaded = PatchGallery.load(saved)
    loaded.save(tmp_path / "copy")
    loaded.save(saved)
    for directory in (tmp_path / "copy", saved):
        again = PatchGallery.load(directory)
        assert again.counts == loaded.counts and again.save_id != loaded.save_id
        np.testing.assert_array_equal(again.features, loaded.features)
        np.testing.assert_array_equal(again.thumbnails, loaded.thumbnails)


def test_loaded_arrays_are_memory_mapped(saved):
    gallery = PatchGallery.load(saved)
    weights = os.path.join(saved, GALLERY_WEIGHTS_NAME)
    for name in ("features", "boxes", "image_ids", "scores", "thumbnails"):
        array = getattr(gallery, name)
        assert isinstance(array, np.memmap), name
        assert array.mode == "r" and not array.flags.writeable and os.path.samefile(array.filename, weights), name


def test_a_large_gallery_opens_memory_mapped_and_samples_within_concepts(tmp_path):
    rng = np.random.default_rng(0)
    count, concepts = 200_000, 1_000
    offsets = np.concatenate([[0], np.sort(rng.choice(np.arange(1, count), concepts - 1, replace=False)), [count]])
    corners = rng.uniform(0, 0.5, (count, 2)).astype(np.float32)
    built = PatchGallery.from_arrays(
        "precomputed:large", [f"c{i}" for i in range(concepts)], rng.normal(size=(count, 64)).astype(np.float16),
        np.concatenate([corners, corners + 0.5], axis=1), np.arange(count), np.ones(count), offsets,
    )  # fmt: skip
    built.save(tmp_path)
    gallery = PatchGallery.load(tmp_path, expected_backbone="precomputed:large", expected_feature_dim=64)
    assert isinstance(gallery.features, np.memmap) and len(gallery) == count
    names = [f"c{i}" for i in rng.integers(0, concepts, 5_000)]
    indices = gallery.sample(names, np.random.default_rng(1))
    assert concept_of_rows(gallery, indices) == names
    np.testing.assert_array_equal(gallery.features_at(indices).numpy(), built.features[indices].astype(np.float32))


def test_pickling_a_loaded_gallery_sends_its_path_not_its_rows(saved, builder):
    gallery = PatchGallery.load(saved)
    payload = pickle.dumps(gallery)
    assert len(payload) < 1_000
    copy = pickle.loads(payload)
    assert isinstance(copy.features, np.memmap) and copy.counts == gallery.counts
    builder.save(saved)  # the files change under the pickle
    with pytest.raises(GalleryError, match="saved again"):
        pickle.loads(payload)
    in_memory = builder.build()
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(in_memory)).features, in_memory.features)


def test_a_gallery_saved_before_save_ids_still_loads(saved):
    config_path = os.path.join(saved, GALLERY_CONFIG_NAME)
    config = json.loads(open(config_path).read())
    del config["save_id"]
    with open(config_path, "w") as handle:
        json.dump(config, handle)
    assert PatchGallery.load(saved).counts == {"dog": 9, "cat": 3, "bird": 1}


def test_from_arrays_checks_rows_like_add(builder):
    built = builder.build()
    arrays = dict(
        features=built.features, boxes=built.boxes, image_ids=built.image_ids, scores=built.scores,
        concept_offsets=built.concept_offsets, thumbnails=built.thumbnails,
    )  # fmt: skip
    again = PatchGallery.from_arrays(BACKBONE, built.concepts, **arrays)
    assert again.counts == built.counts
    np.testing.assert_array_equal(again.features, built.features)
    with pytest.raises(GalleryError, match="NaN or infinite"):
        PatchGallery.from_arrays(BACKBONE, built.concepts, **{**arrays, "features": np.full((13, 8), np.nan)})
    with pytest.raises(GalleryError, match="concept_offsets must rise from 0 to 13"):
        PatchGallery.from_arrays(BACKBONE, built.concepts, **{**arrays, "concept_offsets": [0, 9, 12]})


def test_torch_tensors_are_accepted(tmp_path):
    builder = PatchGalleryBuilder(BACKBONE, FEATURE_DIM)
    part = rows(3, 0)
    builder.add("dog", torch.from_numpy(part["features"]).bfloat16(), torch.from_numpy(part["boxes"]),
                torch.from_numpy(part["image_ids"]), torch.from_numpy(part["scores"]))  # fmt: skip
    np.testing.assert_allclose(builder.build().features, part["features"], rtol=1e-2)


# ---------------------------------------------------------------------------------------------- sampling and reading


def test_sampling_is_seeded_and_stays_in_the_concept(builder):
    gallery = builder.build()
    concepts = ["cat", "dog", "bird", "dog"] * 50
    first = gallery.sample(concepts, np.random.default_rng(7))
    again = gallery.sample(concepts, np.random.default_rng(7))
    other = gallery.sample(concepts, np.random.default_rng(8))
    assert first.dtype == np.int64 and first.shape == (200,)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert concept_of_rows(gallery, first) == concepts
    assert gallery.sample([], np.random.default_rng(0)).shape == (0,)


def test_sampling_is_uniform_over_a_concepts_rows(builder):
    gallery = builder.build()
    draws = 90_000
    counts = np.bincount(gallery.sample(["dog"] * draws, np.random.default_rng(0)), minlength=13)
    assert counts[9:].sum() == 0
    expected = draws / 9
    chi_square = (((counts[:9] - expected) ** 2) / expected).sum()
    assert chi_square < 26.1  # the 0.999 quantile of chi-square with 8 degrees of freedom


def test_unknown_or_empty_concepts_cannot_be_sampled(builder):
    builder.add("unicorn", np.zeros((0, FEATURE_DIM)), np.zeros((0, 4)), [], [], np.zeros((0, 4, 4, 3), np.uint8))
    gallery = builder.build()
    assert gallery.counts["unicorn"] == 0
    assert "dog" in gallery and "unicorn" not in gallery and "dragon" not in gallery
    with pytest.raises(KeyError, match="'dragon' is not in the gallery"):
        gallery.sample(["dog", "dragon"], np.random.default_rng(0))
    with pytest.raises(KeyError, match=r"\['unicorn'\] have no patches"):
        gallery.sample(["dog", "unicorn"], np.random.default_rng(0))


def test_rows_come_back_as_float32_tensors(saved):
    gallery = PatchGallery.load(saved)
    indices = np.array([12, 0, 12])
    features, boxes = gallery.features_at(indices), gallery.boxes_at(indices)
    assert isinstance(features, torch.Tensor) and features.dtype == torch.float32 and features.shape == (3, 8)
    assert isinstance(boxes, torch.Tensor) and boxes.dtype == torch.float32 and boxes.shape == (3, 4)
    np.testing.assert_array_equal(features.numpy(), gallery.features[indices].astype(np.float32))
    np.testing.assert_array_equal(boxes.numpy(), gallery.boxes[indices])
    np.testing.assert_array_equal(gallery.thumbnails_at(indices), gallery.thumbnails[indices])
    plain = PatchGalleryBuilder(BACKBONE, FEATURE_DIM)
    plain.add("dog", **rows(2, 0))
    assert plain.build().thumbnails_at(np.array([0])) is None


def test_summary_and_repr_describe_the_gallery(builder):
    gallery = builder.build()
    assert repr(gallery) == (
        "PatchGallery(backbone='efficientnet-lite0', feature_dim=8, dtype=float16, concepts=3, rows=13, "
        "thumbnails=4x4)"
    )
    lines = gallery.summary().splitlines()
    assert lines[0] == repr(gallery)
    assert lines[2].split() == ["dog", "9", "69.2%"] and lines[4].split() == ["bird", "1", "7.7%"]


# ---------------------------------------------------------------------------------------------- refusals when building


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(features=np.zeros((2, FEATURE_DIM + 1))), r"expected features of shape \(N, 8\), got \(2, 9\)"),
        (dict(features=np.zeros(FEATURE_DIM)), r"expected features of shape \(N, 8\), got \(8,\)"),
        (dict(features=np.full((2, FEATURE_DIM), np.nan)), "features contain NaN or infinite"),
        (dict(features=np.full((2, FEATURE_DIM), -np.inf)), "features contain NaN or infinite"),
        (dict(features=np.full((2, FEATURE_DIM), 1e5)), "exceed the float16 range"),
        (dict(boxes=np.array([[0.0, 0.0, 1.5, 1.0]] * 2)), r"in \[0, 1\]"),
        (dict(boxes=np.array([[-0.1, 0.0, 0.5, 1.0]] * 2)), r"in \[0, 1\]"),
        (dict(boxes=np.array([[0.0, np.nan, 0.5, 1.0]] * 2)), r"in \[0, 1\]"),
        (dict(boxes=np.array([[0.5, 0.0, 0.2, 1.0]] * 2)), "x2 < x1"),
        (dict(boxes=np.array([[0.0, 0.5, 0.2, 0.4]] * 2)), "y2 < y1"),
        (dict(boxes=np.array([[0.0, 0.0, 0.5, 0.5]] * 3)), r"expected boxes of shape \(2, 4\)"),
        (dict(image_ids=np.arange(3)), "expected 2 image_ids for 2 feature rows"),
        (dict(image_ids=np.array([1.5, 2.0])), "image_ids must be integers"),
        (dict(scores=np.ones(1)), "expected 2 scores for 2 feature rows"),
        (dict(scores=np.array([0.5, np.nan])), "scores contain NaN"),
        (dict(thumbnails=np.zeros((3, 4, 4, 3), np.uint8)), r"expected uint8 thumbnails of shape \(2, 4, 4, 3\)"),
        (dict(thumbnails=np.zeros((2, 5, 5, 3), np.uint8)), r"expected uint8 thumbnails of shape \(2, 4, 4, 3\)"),
        (dict(thumbnails=np.zeros((2, 4, 4, 3), np.float32)), "got float32"),
        (dict(thumbnails=None), "thumbnails are 4x4; give thumbnails for every add or for none"),
    ],
)
def test_bad_rows_are_refused(change, message):
    builder = PatchGalleryBuilder(BACKBONE, FEATURE_DIM, thumbnail_size=THUMBNAIL)
    with pytest.raises(GalleryError, match=message):
        builder.add("dog", **{**rows(2, 0, thumbnails=True), **change})
    assert isinstance(GalleryError("x"), ValueError)


def test_the_first_add_decides_whether_there_are_thumbnails():
    builder = PatchGalleryBuilder(BACKBONE, FEATURE_DIM)
    builder.add("dog", **rows(2, 0, thumbnails=True))
    assert builder.thumbnail_size == THUMBNAIL
    with pytest.raises(GalleryError, match="give thumbnails for every add or for none"):
        builder.add("cat", **rows(2, 1))
    without = PatchGalleryBuilder(BACKBONE, FEATURE_DIM)
    without.add("dog", **rows(2, 0))
    with pytest.raises(GalleryError, match="thumbnails are none"):
        without.add("cat", **rows(2, 1, thumbnails=True))


@pytest.mark.parametrize("concept", ["", "  ", None])
def test_empty_concept_names_are_refused(concept):
    with pytest.raises(GalleryError, match="non-empty string"):
        PatchGalleryBuilder(BACKBONE, FEATURE_DIM).add(concept, **rows(1, 0))


def test_empty_galleries_and_bad_builder_settings_are_refused():
    builder = PatchGalleryBuilder(BACKBONE, FEATURE_DIM)
    with pytest.raises(GalleryError, match="empty"):
        builder.build()
    builder.add("dog", np.zeros((0, FEATURE_DIM)), np.zeros((0, 4)), [], [])
    with pytest.raises(GalleryError, match="empty"):
        builder.build()
    with pytest.raises(GalleryError, match="backbone"):
        PatchGalleryBuilder("", FEATURE_DIM)
    with pytest.raises(GalleryError, match="not float64"):
        PatchGalleryBuilder(BACKBONE, FEATURE_DIM, dtype=np.float64)


# ---------------------------------------------------------------------------------------------- refusals when loading


def test_backbone_and_feature_size_mismatches_are_refused(saved):
    with pytest.raises(GalleryError, match="built with 'efficientnet-lite0' but the model expects 'auto:vit'"):
        PatchGallery.load(saved, expected_backbone="auto:vit")
    with pytest.raises(GalleryError, match="8-d features but the model expects 1280-d"):
        PatchGallery.load(saved, expected_feature_dim=1280)


@pytest.mark.parametrize("missing", [GALLERY_CONFIG_NAME, GALLERY_WEIGHTS_NAME])
def test_missing_files_are_refused(saved, missing):
    os.remove(os.path.join(saved, missing))
    with pytest.raises(GalleryError, match=f"{missing} is missing"):
        PatchGallery.load(saved)


def rewrite_config(directory: str, **changes) -> None:
    path = os.path.join(directory, GALLERY_CONFIG_NAME)
    config = json.loads(open(path).read())
    with open(path, "w") as handle:
        json.dump({**config, **changes}, handle)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(format_version=99), "unknown gallery format_version 99"),
        (dict(format_version=None), "unknown gallery format_version None"),
        (dict(backbone=None), "field 'backbone'"),
        (dict(num_rows=14), r"describes 14 x 8 features, the weights hold \(13, 8\)"),
        (dict(feature_dim=16), r"describes 13 x 16 features, the weights hold \(13, 8\)"),
        (dict(dtype="float32"), "the JSON says float32 features, the weights hold float16"),
        (dict(dtype="bfloat16"), "unsupported feature dtype 'bfloat16'"),
        (dict(concepts=["dog", "cat"], counts={"dog": 9, "cat": 3}), r"concept_offsets should have shape \(3,\)"),
        (dict(counts={"dog": 8, "cat": 4, "bird": 1}), "per-concept counts differ"),
        (dict(thumbnail_size=None), "thumbnails the JSON does not mention"),
        (dict(thumbnail_size=8), r"thumbnails should have shape \(13, 8, 8, 3\)"),
        (dict(save_id="0" * 32), "different saves"),
        (dict(num_rows=0), "empty"),
        (dict(concepts=[]), "empty"),
    ],
)
def test_config_that_disagrees_with_the_weights_is_refused(saved, changes, message):
    rewrite_config(saved, **changes)
    with pytest.raises(GalleryError, match=message):
        PatchGallery.load(saved)


def test_corrupt_config_is_refused(saved):
    with open(os.path.join(saved, GALLERY_CONFIG_NAME), "w") as handle:
        handle.write("{")
    with pytest.raises(GalleryError, match="gallery.json is corrupt"):
        PatchGallery.load(saved)


def header_and_data(path: str) -> tuple[dict, bytes]:
    content = open(path, "rb").read()
    (size,) = struct.unpack("<Q", content[:8])
    return json.loads(content[8 : 8 + size]), content[8 + size :]


def with_header(header: dict, data: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda content: content[:-10], "truncated or corrupt: .*not fully covered"),
        (lambda content: content[:100], "truncated or corrupt: .*invalid header length"),
        (lambda content: content[:5], "truncated or corrupt: .*header too small"),
        (lambda content: content[:8] + b"\xff" * 40 + content[48:], "truncated or corrupt: .*invalid UTF-8 in header"),
        (lambda content: struct.pack("<Q", 2**40) + content[8:], "truncated or corrupt: .*header too large"),
        (lambda content: content + b"\0" * 16, "truncated or corrupt: .*not fully covered"),
    ],
)
def test_truncated_or_corrupt_weights_are_refused(saved, damage, message):
    """safetensors' own parser reads the header; its refusals come as one-line GalleryErrors naming the file."""
    weights = os.path.join(saved, GALLERY_WEIGHTS_NAME)
    content = open(weights, "rb").read()
    with open(weights, "wb") as handle:
        handle.write(damage(content))
    with pytest.raises(GalleryError, match=f"{GALLERY_WEIGHTS_NAME} is {message}") as error:
        PatchGallery.load(saved)
    assert "\n" not in str(error.value)


def without_boxes(header: dict, data: bytes) -> tuple[dict, bytes]:
    """The same tensors but boxes, laid out back to back again, so that the missing tensor is what fails."""
    kept = sorted((entry["data_offsets"], name) for name, entry in header.items() if name not in ("__metadata__", "boxes"))
    chunks, end = [], 0
    for (start, stop), name in kept:
        chunks.append(data[start:stop])
        header[name]["data_offsets"], end = [end, end + stop - start], end + stop - start
    del header["boxes"]
    return header, b"".join(chunks)


def header_edit(change):
    """An edit that changes the header in place and keeps the data."""

    def edit(header: dict, data: bytes) -> tuple[dict, bytes]:
        change(header)
        return header, data

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (header_edit(lambda header: header["scores"].update(data_offsets=[0, 4])), "invalid shape, data type, or offset"),
        (header_edit(lambda header: header["scores"].update(dtype="BF16", shape=[26])), "tensor 'scores' is BF16"),
        (without_boxes, r"lack tensors \['boxes'\]"),
        (header_edit(lambda header: header.__setitem__("__metadata__", {})), "different saves"),
    ],
)
def test_inconsistent_weight_headers_are_refused(saved, edit, message):
    weights = os.path.join(saved, GALLERY_WEIGHTS_NAME)
    header, data = edit(*header_and_data(weights))
    with open(weights, "wb") as handle:
        handle.write(with_header(header, data))
    with pytest.raises(GalleryError, match=message):
        PatchGallery.load(saved)


# ---------------------------------------------------------------------------------------------- interrupted saves


def replacement_gallery() -> PatchGalleryBuilder:
    other = PatchGalleryBuilder(BACKBONE, FEATURE_DIM, thumbnail_size=THUMBNAIL)
    other.add("fish", **rows(2, 5, thumbnails=True))
    return other


def fail_on_call(monkeypatch, function_name: str, failing_call: int) -> None:
    """Makes the `failing_call`-th call of gallery_module.os.<function_name> die as a kill would."""
    real, calls = getattr(os, function_name), []

    def dying(*args, **kwargs):
        calls.append(args)
        if len(calls) == failing_call:
            raise KeyboardInterrupt("killed while saving")
        return real(*args, **kwargs)

    monkeypatch.setattr(gallery_module.os, function_name, dying)


@pytest.mark.parametrize("function_name, failing_call", [("fsync", 1), ("fsync", 2), ("replace", 1)])
def test_a_save_interrupted_before_the_weights_rename_keeps_the_old_gallery(saved, monkeypatch, function_name,
                                                                            failing_call):  # fmt: skip
    before = PatchGallery.load(saved)
    fail_on_call(monkeypatch, function_name, failing_call)
    with pytest.raises(KeyboardInterrupt):
        replacement_gallery().save(saved)
    monkeypatch.undo()
    after = PatchGallery.load(saved)
    assert after.save_id == before.save_id and after.counts == {"dog": 9, "cat": 3, "bird": 1}
    np.testing.assert_array_equal(after.features, before.features)
    assert sorted(os.listdir(saved)) == [GALLERY_CONFIG_NAME, GALLERY_WEIGHTS_NAME]  # no temporary file left


def test_a_save_interrupted_between_the_renames_opens_the_new_gallery(saved, monkeypatch):
    """The rename of gallery.json commits a save: after it, the new gallery opens, its weights found by save_id."""
    fail_on_call(monkeypatch, "replace", 2)
    with pytest.raises(KeyboardInterrupt):
        replacement_gallery().save(saved)
    monkeypatch.undo()
    assert PatchGallery.load(saved, verify=True).counts == {"fish": 2}
    replacement_gallery().save(saved)  # the next save completes the interrupted one and leaves no temporary file
    assert PatchGallery.load(saved).counts == {"fish": 2}
    assert sorted(os.listdir(saved)) == [GALLERY_CONFIG_NAME, GALLERY_WEIGHTS_NAME]


def test_weights_renamed_while_opening_are_not_mapped_with_the_new_layout(saved, monkeypatch):
    """safetensors reads the layout from the path, the rows are mapped from the handle already open: a rename in
    between (a save completing its commit) makes the load start again rather than map old bytes with a new layout."""
    fail_on_call(monkeypatch, "replace", 2)  # gallery.json committed, the new weights still under their staged name
    with pytest.raises(KeyboardInterrupt):
        replacement_gallery().save(saved)
    monkeypatch.undo()
    staged = next(name for name in os.listdir(saved) if name.endswith(".tmp"))
    real_layout = gallery_module.tensor_layout

    def renamed_first(path):
        if os.path.exists(os.path.join(saved, staged)):  # the old weights are open: the save completes now
            os.replace(os.path.join(saved, staged), os.path.join(saved, GALLERY_WEIGHTS_NAME))
        return real_layout(path)

    monkeypatch.setattr(gallery_module, "tensor_layout", renamed_first)
    loaded = PatchGallery.load(saved, verify=False)
    assert loaded.counts == {"fish": 2}
    np.testing.assert_array_equal(loaded.features, replacement_gallery().build().features)


def test_a_first_save_interrupted_leaves_no_gallery(tmp_path, monkeypatch):
    fail_on_call(monkeypatch, "replace", 2)
    with pytest.raises(KeyboardInterrupt):
        replacement_gallery().save(tmp_path)
    monkeypatch.undo()
    with pytest.raises(GalleryError, match="gallery.json is missing"):
        PatchGallery.load(tmp_path)
    assert os.listdir(tmp_path) == [GALLERY_WEIGHTS_NAME]


# ---------------------------------------------------------------------------------------------- merging


def test_merge_concatenates_rows_by_concept(builder):
    first = builder.build()
    second_builder = PatchGalleryBuilder(BACKBONE, FEATURE_DIM, dtype=np.float32, thumbnail_size=THUMBNAIL)
    second_builder.add("cat", **rows(2, 9, thumbnails=True))
    second_builder.add("fish", **rows(1, 10, thumbnails=True))
    second = second_builder.build()
    merged = PatchGallery.merge([first, second])
    assert merged.concepts == ["dog", "cat", "bird", "fish"]
    assert merged.counts == {"dog": 9, "cat": 5, "bird": 1, "fish": 1}
    assert merged.dtype == np.float32  # the wider of float16 and float32
    cat_ids = np.concatenate([first.image_ids[9:12], second.image_ids[:2]])
    np.testing.assert_array_equal(merged.image_ids[9:14], cat_ids)
    np.testing.assert_array_equal(merged.features[15], second.features[2])  # fish follows bird
    np.testing.assert_array_equal(merged.thumbnails[12:14], second.thumbnails[:2])


def test_merge_refuses_galleries_that_do_not_match(builder):
    first = builder.build()
    vit = PatchGalleryBuilder("auto:vit", FEATURE_DIM, thumbnail_size=THUMBNAIL)
    vit.add("dog", **rows(1, 0, thumbnails=True))
    with pytest.raises(GalleryError, match=r"Cannot merge a 'auto:vit' gallery \(8-d\) with a 'efficientnet-lite0'"):
        PatchGallery.merge([first, vit.build()])
    wide = PatchGalleryBuilder(BACKBONE, 16, thumbnail_size=THUMBNAIL)
    wide.add("dog", **rows(1, 0, thumbnails=True, feature_dim=16))
    with pytest.raises(GalleryError, match=r"\(16-d\) with a 'efficientnet-lite0' gallery \(8-d\)"):
        PatchGallery.merge([first, wide.build()])
    plain = PatchGalleryBuilder(BACKBONE, FEATURE_DIM)
    plain.add("dog", **rows(1, 0))
    with pytest.raises(GalleryError, match="thumbnail sizes 4 and None"):
        PatchGallery.merge([first, plain.build()])
    with pytest.raises(GalleryError, match="Nothing to merge"):
        PatchGallery.merge([])
