"""Faults and bad input (issue 13): kills at every step of a gallery save, concurrent saves, damaged files, bad
images, bad pre-training and fine-tuning settings. Each case ends in a clear error or a correct result."""

import io
import json
import os
import sys

import numpy as np
import pytest

from processing import gallery as gallery_module
from processing.gallery import GALLERY_CONFIG_NAME, GALLERY_WEIGHTS_NAME, GalleryError, PatchGallery


FEATURE_DIM = 8
CLEAN = [GALLERY_CONFIG_NAME, GALLERY_WEIGHTS_NAME]


def make_gallery(concept: str, rows: int, seed: int) -> PatchGallery:
    rng = np.random.default_rng(seed)
    return PatchGallery.from_arrays(
        "precomputed:test", [concept], rng.normal(size=(rows, FEATURE_DIM)), np.tile([0.0, 0.0, 1.0, 1.0], (rows, 1)),
        np.arange(rows), np.ones(rows), [0, rows],
    )  # fmt: skip


OLD, NEW, OTHER = make_gallery("dog", 5, 0), make_gallery("fish", 7, 1), make_gallery("cat", 3, 2)


def which(directory) -> PatchGallery | None:
    """The gallery the folder holds, checked whole (sha256 and every value), as one of OLD, NEW, OTHER; None if none."""
    try:
        loaded = PatchGallery.load(directory, verify=True)
    except GalleryError as error:
        assert "is missing" in str(error), error  # no gallery at all, never a broken one
        return None
    for candidate in (OLD, NEW, OTHER):
        if loaded.concepts == candidate.concepts:
            np.testing.assert_array_equal(loaded.features, candidate.features)
            np.testing.assert_array_equal(loaded.image_ids, candidate.image_ids)
            return candidate
    raise AssertionError(f"an unknown gallery: {loaded}")


def save_killed_at(gallery: PatchGallery, directory, step: int) -> bool:
    """Saves `gallery` in a forked child that dies (os._exit: no cleanup runs, as under SIGKILL) at its `step`-th file
    operation (open, write, fsync, rename, remove); whether it died before the save finished."""
    pid = os.fork()
    if pid == 0:  # the child
        try:
            calls = [0]

            def dying(real):
                def operation(*args, **kwargs):
                    calls[0] += 1
                    if calls[0] == step:
                        os._exit(77)
                    return real(*args, **kwargs)

                return operation

            for name in ("open", "replace", "fsync", "remove"):
                setattr(os, name, dying(getattr(os, name)))
            gallery_module.HashingWriter.write = dying(gallery_module.HashingWriter.write)
            gallery.save(directory)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, 77), f"the save failed on its own (exit {code})"
    return code == 77


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("first_save", [False, True])
def test_a_save_killed_at_any_step_leaves_the_old_or_the_new_gallery_whole(tmp_path, first_save):
    outcomes = []
    for step in range(1, 200):
        directory = tmp_path / f"step_{step}"
        if not first_save:
            OLD.save(directory)
        if not save_killed_at(NEW, directory, step):
            break
        found = which(directory)
        assert found is NEW or found is (None if first_save else OLD), f"killed at step {step}: {found}"
        outcomes.append(found)
        OTHER.save(directory)  # the next save completes or cleans up what the kill left
        assert which(directory) is OTHER and sorted(os.listdir(directory)) == CLEAN, f"step {step}"
    else:
        raise AssertionError("the save never finished")
    assert step > 8 and which(directory) is NEW and sorted(os.listdir(directory)) == CLEAN
    assert NEW in outcomes and (None if first_save else OLD) in outcomes  # both sides of the commit were hit


@pytest.mark.parametrize("function_name", ["replace", "fsync", "remove"])
def test_a_save_that_raises_at_any_step_leaves_the_old_or_the_new_gallery(tmp_path, monkeypatch, function_name):
    real = getattr(os, function_name)
    for failing_call in range(1, 6):
        directory = tmp_path / f"{function_name}_{failing_call}"
        OLD.save(directory)
        calls = []

        def failing(*args, **kwargs):
            calls.append(args)
            if len(calls) == failing_call:
                raise OSError("disk full")
            return real(*args, **kwargs)

        monkeypatch.setattr(gallery_module.os, function_name, failing)
        try:
            NEW.save(directory)
            raised = False
        except OSError:
            raised = True
        monkeypatch.undo()
        assert which(directory) in ((OLD, NEW) if raised else (NEW,))
        leftovers = set(os.listdir(directory)) - set(CLEAN)
        assert not leftovers or (which(directory) is NEW and len(leftovers) == 1), leftovers  # committed weights only


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_concurrent_saves_and_loads_always_see_a_whole_gallery(tmp_path):
    directory = tmp_path / "gallery"
    OLD.save(directory)
    writers = []
    for gallery in (NEW, OTHER):
        pid = os.fork()
        if pid == 0:
            try:
                for _ in range(25):
                    gallery.save(directory)
                os._exit(0)
            except BaseException:
                os._exit(1)
        writers.append(pid)
    seen, running = set(), set(writers)
    while running:
        found = which(directory)  # every load during the saves: the old gallery or one of the new, whole
        assert found is not None
        seen.add(found.concepts[0])
        for pid in list(running):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                assert os.waitstatus_to_exitcode(status) == 0, "a writer failed"
                running.discard(pid)
    assert which(directory) in (NEW, OTHER) and sorted(os.listdir(directory)) == CLEAN
    assert len(seen) >= 2


def test_a_flipped_bit_in_the_features_is_refused(tmp_path):
    NEW.save(tmp_path)
    weights = tmp_path / GALLERY_WEIGHTS_NAME
    content = bytearray(weights.read_bytes())
    content[-3] ^= 0x10  # inside the last tensor
    weights.write_bytes(bytes(content))
    with pytest.raises(GalleryError, match="is corrupt: its sha256 is"):
        PatchGallery.load(tmp_path)  # small: checked by default
    with pytest.raises(GalleryError, match="sha256"):
        PatchGallery.load(tmp_path, verify=True)
    assert len(PatchGallery.load(tmp_path, verify=False)) == 7  # opted out: opened without reading a row


def test_weights_of_0xff_bytes_are_refused_even_without_a_checksum(tmp_path):
    NEW.save(tmp_path)
    gallery = PatchGallery.load(tmp_path)
    start = gallery.features.offset
    end = start + gallery.features.nbytes
    del gallery
    weights = tmp_path / GALLERY_WEIGHTS_NAME
    content = bytearray(weights.read_bytes())
    content[start:end] = b"\xff" * (end - start)
    weights.write_bytes(bytes(content))
    config = json.loads((tmp_path / GALLERY_CONFIG_NAME).read_text())
    del config["weights_sha256"]  # as a gallery saved before checksums, or crafted with a matching one
    (tmp_path / GALLERY_CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(GalleryError, match="the features of row 0 are NaN or infinite"):
        PatchGallery.load(tmp_path, verify=True)


def test_a_save_id_in_the_json_cannot_name_a_path(tmp_path):
    NEW.save(tmp_path)
    config = json.loads((tmp_path / GALLERY_CONFIG_NAME).read_text())
    config["save_id"] = "../../elsewhere"
    (tmp_path / GALLERY_CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(GalleryError, match="different saves"):
        PatchGallery.load(tmp_path)


# ---------------------------------------------------------------------------------------------- image bit depth


def png(array: np.ndarray):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    buffer.seek(0)
    return Image.open(buffer)


def test_16_bit_and_float_images_are_scaled_by_their_true_depth():
    from PIL import Image

    from processing.processing_vlmixer import to_rgb_image

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    expected = np.rint(ramp / 257).astype(np.uint8)
    for image in (png(ramp), ramp, Image.fromarray(ramp.astype(np.int32), mode="I")):  # 16-bit PNG, array, mode I
        rgb = np.asarray(to_rgb_image(image))
        assert rgb.shape == (64, 64, 3) and np.abs(rgb[..., 0].astype(int) - expected).max() <= 1  # not all white
    unit = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(16, 16)
    for image in (Image.fromarray(unit, mode="F"), unit, np.stack([unit] * 3, axis=-1).astype(np.float64)):
        rgb = np.asarray(to_rgb_image(image))
        np.testing.assert_array_equal(rgb[..., 0], np.rint(unit * 255).astype(np.uint8))  # not all black
    eight_bit = np.full((4, 4), 7, np.uint8)
    assert np.asarray(to_rgb_image(Image.fromarray(eight_bit).convert("I"))).max() == 7  # 8-bit values in mode I
    assert np.asarray(to_rgb_image(eight_bit.astype(np.int64))).max() == 7


@pytest.mark.parametrize(
    "image, message",
    [
        (np.full((4, 4), 2.5, np.float32), r"float image .* must hold finite values in \[0, 1\]"),
        (np.full((4, 4, 3), np.nan), "finite values"),
        (np.full((4, 4), 300, np.int64), r"An 8-bit image .* \[0, 255\], got \[300, 300\]"),
        (np.full((4, 4), -1, np.int32), r"\[0, 255\], got \[-1, -1\]"),
        (np.zeros((4, 4, 5), np.uint8), r"\(H, W\) or \(H, W, 1-4\)"),
    ],
)
def test_images_outside_the_range_of_their_depth_are_refused(image, message):
    from processing.processing_vlmixer import to_rgb_image

    with pytest.raises(ValueError, match=message):
        to_rgb_image(image)
