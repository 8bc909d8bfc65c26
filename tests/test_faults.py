"""Faults and bad input (issue 13): kills at every step of a gallery save, concurrent saves, damaged files, bad
images, bad pre-training and fine-tuning settings. Each case ends in a clear error or a correct result."""

import io
import json
import os

import numpy as np
import pytest
import torch

from vlmixer.processing import gallery as gallery_module
from vlmixer.processing.gallery import GALLERY_CONFIG_NAME, GALLERY_WEIGHTS_NAME, GalleryError, PatchGallery

from .helpers.faults import killed_at


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
    """Saves `gallery` in a child that dies at its `step`-th file operation (open, write, fsync, rename, remove)."""
    return killed_at(step, lambda: gallery.save(directory), ("open", "replace", "fsync", "remove"),
                     ((gallery_module.HashingWriter, "write"),))  # fmt: skip


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

    from vlmixer.processing.processing_vlmixer import to_rgb_image

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
    from vlmixer.processing.processing_vlmixer import to_rgb_image

    with pytest.raises(ValueError, match=message):
        to_rgb_image(image)


# ---------------------------------------------------------------------------------------------- pre-training inputs




@pytest.fixture(scope="module")
def pretrain_inputs(tmp_path_factory):
    from vlmixer.processing import ConceptVocabulary, PatchGalleryBuilder

    folder = tmp_path_factory.mktemp("pretrain_faults")
    builder = PatchGalleryBuilder("precomputed:test-features", 16)
    rng = np.random.default_rng(0)
    for concept in ConceptVocabulary.fashion_mnist().labels:
        builder.add(concept, rng.normal(size=(4, 16)), np.tile([0.0, 0.0, 1.0, 1.0], (4, 1)), np.arange(4), np.ones(4))
    builder.save(folder / "gallery")
    items = ["dress", "sandals", "bag", "coat", "shirt", "sneakers"]
    lines = [f"She bought a {items[i % 6]} and a {items[(i * 7) % 6]} at the market." for i in range(40)]
    (folder / "corpus.txt").write_text("\n".join(lines) + "\n")
    settings = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                    max_position_embeddings=64, visual_feature_dim=16, vision_backbone="precomputed",
                    feature_source="test-features", projection_dim=16)  # fmt: skip
    (folder / "model.json").write_text(json.dumps(settings))
    return folder


def pretrain_args(inputs, output_dir, *extra) -> list[str]:
    return [
        "--text_corpus", str(inputs / "corpus.txt"), "--gallery", str(inputs / "gallery"), "--model_config",
        str(inputs / "model.json"), "--output_dir", str(output_dir), "--max_steps", "4", "--batch_size", "4",
        "--logging_steps", "1", "--checkpointing_steps", "2", "--warmup_steps", "1", "--stream_weights",
        "text=1,tags=0.3", "--no_final_model", *extra,
    ]  # fmt: skip


def refused(argv) -> str:
    """The one-line message pretrain.py exits with (never a traceback, never status 0)."""
    from vlmixer.scripts import pretrain

    with pytest.raises(SystemExit) as exit_info:
        pretrain.main(argv)
    code = exit_info.value.code
    assert code not in (0, None)
    return str(code)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max_steps", "-3"], "--max_steps must be a positive integer, got -3"),
        (["--max_length", "2"], "--max_length must be at least 8"),
        (["--logging_steps", "0"], "--logging_steps must be a positive integer"),
        (["--checkpointing_steps", "0"], "--checkpointing_steps must be a positive integer"),
        (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps must be"),
        (["--batch_size", "0"], "--batch_size must be a positive integer"),
        (["--max_steps", "0", "--lr_scheduler_type", "polynomial"], "--max_steps must be a positive integer, got 0"),
        (["--config_overrides", "{mlm: 1}"], "--config_overrides is not valid JSON"),
        (["--config_overrides", "[1]"], "--config_overrides must be a JSON object"),
        (["--lr_scheduler_type", "linaer"], "--lr_scheduler_type 'linaer' is none of"),
        (["--stream_weights", "text=one"], "--stream_weights 'text=one'"),
        (["--stream_weights", "text=0"], "At least one stream needs a positive weight"),
        (["--cmc_ratio", "1.5"], r"--cmc_ratio must be in [0, 1]"),
    ],
)
def test_bad_pretraining_settings_are_one_line_errors(pretrain_inputs, tmp_path, capsys, extra, message):
    from vlmixer.scripts import pretrain

    with pytest.raises(SystemExit) as exit_info:
        pretrain.parse_args(pretrain_args(pretrain_inputs, tmp_path / "run", *extra))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in error, error
    assert not (tmp_path / "run").exists()


def corpus_file(tmp_path, name: str, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize(
    "corpus, streaming, message",
    [
        (b"", False, "is empty"),
        (b"\n  \n\n", False, "holds no sentence"),
        (bytes(range(256)) * 8, False, "is not UTF-8 text"),
        (b"a\0b\nc\n", False, "holds NUL bytes"),
        (b"She bought a dress.\nA coat.\n", True, "fewer than one global batch"),
        (b"She bought a dress.\nA coat and a bag.\n", False, "fewer than one global batch"),
        (None, False, "does not exist"),
    ],
)
def test_unusable_corpora_are_one_line_errors(pretrain_inputs, tmp_path, corpus, streaming, message):
    path = str(tmp_path / "missing.txt") if corpus is None else corpus_file(tmp_path, "corpus.txt", corpus)
    argv = pretrain_args(pretrain_inputs, tmp_path / "run", "--stream_weights", "text=1")
    argv[argv.index("--text_corpus") + 1] = path
    assert message in refused(argv + (["--streaming"] if streaming else []))


def test_missing_or_damaged_gallery_and_model_are_one_line_errors(pretrain_inputs, tmp_path):
    argv = pretrain_args(pretrain_inputs, tmp_path / "run")
    argv[argv.index("--gallery") + 1] = str(tmp_path / "nowhere")
    assert "--gallery" in refused(argv) and "gallery.json is missing" in refused(argv)
    damaged = tmp_path / "damaged"
    PatchGallery.load(pretrain_inputs / "gallery").save(damaged)
    content = bytearray((damaged / GALLERY_WEIGHTS_NAME).read_bytes())
    content[-2] ^= 1
    (damaged / GALLERY_WEIGHTS_NAME).write_bytes(bytes(content))
    argv[argv.index("--gallery") + 1] = str(damaged)
    assert "sha256" in refused(argv)
    argv = pretrain_args(pretrain_inputs, tmp_path / "run2")
    argv[argv.index("--model_config") : argv.index("--model_config") + 2] = ["--model_name_or_path", str(tmp_path / "no_model")]
    assert "does not exist" in refused(argv)


def test_a_folder_without_tokenizer_files_and_nan_weights_are_refused(tmp_path, minilm_path):
    import shutil

    from vlmixer.scripts.inputs import InputError, check_finite_weights, check_tokenizer
    from transformers import AutoTokenizer

    from vlmixer.modeling_vlmixer import VLMixerForPreTraining
    from tests.conftest import tiny_config

    folder = tmp_path / "no_tokenizer"
    folder.mkdir()
    for name in ("config.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(minilm_path, name), folder / name)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert len(tokenizer) == 5  # what loads without tokenizer.json / vocab.txt: every word becomes [UNK]
    with pytest.raises(InputError, match="has 5 tokens for a model of 30522: its tokenizer files"):
        check_tokenizer(tokenizer, 30522, str(folder))
    check_tokenizer(AutoTokenizer.from_pretrained(minilm_path), 30522, minilm_path)
    model = VLMixerForPreTraining(tiny_config())
    check_finite_weights(model, "fresh")
    weights = dict(model.named_parameters())
    name = next(iter(weights))
    with torch_no_grad():
        weights[name].view(-1).view(np_int_view(weights[name]))[:3] = -1  # 0xFF bytes: NaN
    with pytest.raises(InputError, match=f"damaged: {name} holds NaN"):
        check_finite_weights(model, "model.safetensors")


def torch_no_grad():
    import torch

    return torch.no_grad()


def np_int_view(tensor):
    import torch

    return {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}[tensor.dtype]


def test_a_run_folder_is_never_overwritten_or_shrunk_and_no_metrics_row_is_lost(pretrain_inputs, tmp_path):
    import csv

    from vlmixer.scripts import pretrain

    run = tmp_path / "run"
    figures = pretrain.main(pretrain_args(pretrain_inputs, run))
    assert figures["steps"] == 4 and (run / "checkpoints" / "step_2").is_dir()

    def steps(name="metrics.csv"):
        with (run / name).open() as handle:
            return [int(row["step"]) for row in csv.DictReader(handle)]

    assert steps() == [1, 2, 3, 4]
    assert "already holds files" in refused(pretrain_args(pretrain_inputs, run))
    assert "would cut it short" in refused(pretrain_args(pretrain_inputs, run, "--resume_from_checkpoint", "latest",
                                                         "--max_steps", "3"))  # fmt: skip
    assert "nothing left to train" in refused(pretrain_args(pretrain_inputs, run, "--resume_from_checkpoint", "latest",
                                                            "--max_steps", "2"))  # fmt: skip
    assert steps() == [1, 2, 3, 4]
    # resuming from the older checkpoint logs steps 3 and 4 again; the rows it replaces are kept aside
    pretrain.main(pretrain_args(pretrain_inputs, run, "--resume_from_checkpoint", str(run / "checkpoints" / "step_2")))
    assert steps() == [1, 2, 3, 4] and steps("metrics_superseded.csv") == [3, 4]
    # a torn last row (a kill while appending) is left out, not a crash
    with (run / "metrics.csv").open("a") as handle:
        handle.write("5,0.0001,3.")
    pretrain.MetricsLog(run / "metrics.csv", 4)
    assert steps() == [1, 2, 3, 4]
    pretrain.main(pretrain_args(pretrain_inputs, run, "--overwrite_output_dir", "--max_steps", "2"))
    assert steps() == [1, 2] and not (run / "metrics_superseded.csv").exists()


# ---------------------------------------------------------------------------------------------- fine-tuning inputs


def test_integer_labels_get_names_and_bad_labels_are_clear_errors():
    from datasets import Dataset

    from vlmixer.processing.tasks import TaskDataError, label_names

    splits = {"train": Dataset.from_dict({"label": [0, 2, 1]}), "validation": Dataset.from_dict({"label": [3]})}
    assert label_names(splits) == ["0", "1", "2", "3"]  # before: TypeError, NoneType has no len()
    with pytest.raises(TaskDataError, match="missing or negative integer label"):
        label_names({"train": Dataset.from_dict({"label": [0, -1]})})
    with pytest.raises(TaskDataError, match="label column holds float"):
        label_names({"train": Dataset.from_dict({"label": [0.5, 1.0]})})


def test_an_empty_train_split_is_a_clear_error(tmp_path):
    from datasets import Dataset

    from vlmixer.processing.tasks import TaskDataError, prepare_split

    columns = {"image": [], "boxes": [], "text": [], "label": []}
    with pytest.raises(TaskDataError, match="The train split has no rows"):  # before: StopIteration inside the Trainer
        prepare_split(Dataset.from_dict(columns), "classification", "train", tmp_path)


def test_features_that_overflow_the_projection_are_a_clear_error():
    """Finite but huge visual features (1e38) used to give NaN outputs with no error."""
    from vlmixer.modeling_vlmixer import VLMixerModel

    from .conftest import tiny_batch, tiny_config

    config = tiny_config()
    model, batch = VLMixerModel(config).eval(), tiny_batch(config)
    assert torch.isfinite(model(**batch).last_hidden_state).all()
    batch["visual_features"] = batch["visual_features"] * 1e38
    with pytest.raises(ValueError, match="overflow the model's projection"):
        model(**batch)


def test_the_processor_truncates_to_the_model_positions_it_was_saved_with(minilm_path):
    """A text longer than the model's positions: the processor that pretrain.py saves knows the model's limit."""
    from transformers import AutoTokenizer

    from vlmixer.processing import VLMixerProcessor

    processor = VLMixerProcessor(AutoTokenizer.from_pretrained(minilm_path), max_position_embeddings=64)
    encoded = processor(text=["a dress and " * 60], cmc_ratio=0.0)
    assert encoded["input_ids"].shape[1] == 64
