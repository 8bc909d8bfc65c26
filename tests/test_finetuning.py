"""The fine-tuning collators (hand-checked shapes and values) and scripts, built as transformers' examples: each runs
end to end offline with a tiny model on the Fashion-MNIST scene tasks (a local `datasets` folder with one
configuration per task) and on generated shape pictures (an `imagefolder`, JSON-lines files and a `save_to_disk`
folder with `Image` columns); Trainer's evaluation, checkpoints and resuming work with the issue's flags, the output
folder reloads with from_pretrained / the Auto class and gives the same logits, holds a model card with a model-index,
and --help explains the data format."""

import contextlib
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoTokenizer

from vlmixer.modeling_vlmixer import (
    VLMixerConfig,
    VLMixerForCaptioning,
    VLMixerForImageTextRetrieval,
    VLMixerForPreTraining,
    VLMixerForQuestionAnswering,
    VLMixerForSequenceClassification,
    VLMixerForVisualReasoning,
)
from vlmixer.processing import VLMixerProcessor
from vlmixer.processing.collators import (
    DataCollatorForImageText,
    DataCollatorForRegionsAndText,
    DataCollatorForVisualReasoning,
    pad_regions,
)
from vlmixer.processing.processing_vlmixer import IGNORE_INDEX, efficientnet_image_processor
from vlmixer.scripts.checkpointing import staged_directory
from vlmixer.scripts.scene_tasks import TaskConfig, write_tasks

from .conftest import REPO_ROOT

FEATURE_DIM = 1280  # what the processor's backbone (efficientnet-lite0) gives
TINY_TASKS = dict(scenes={"train": 8, "validation": 4, "test": 4}, pool_per_class={"train": 3, "validation": 2, "test": 2})
SPLIT_ROWS = {"train": 8, "validation": 4, "test": 4}


# ============================================================================================== fixtures


@pytest.fixture(scope="module")
def processor(minilm_path) -> VLMixerProcessor:
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    return VLMixerProcessor(tokenizer, efficientnet_image_processor(112), backbone_id="efficientnet-lite0")


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory):
    """A handful of Fashion-MNIST scenes of every task: the folder scripts/make_tasks.py writes."""
    directory = tmp_path_factory.mktemp("finetune") / "tasks"
    with staged_directory(directory) as root:
        write_tasks(root, TaskConfig(**TINY_TASKS), progress=False)
    return directory


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, processor):
    """A 2-layer, 32-wide 'pre-trained' folder with BERT's vocabulary and the processor (stands in for vlmixer-small)."""
    config = VLMixerConfig(
        vocab_size=len(processor.tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, visual_feature_dim=FEATURE_DIM,
        vision_backbone="precomputed", feature_source="test-features", projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-vlmixer")
    VLMixerForPreTraining(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """The --cache_dir of every run here: datasets and region features, shared across runs (reused by fingerprint)."""
    return tmp_path_factory.mktemp("hf-cache")


def rows_with_features(count_left: int, count_right: int | None = None) -> list[dict]:
    """Two hand-made rows whose regions carry their features (row r, region k: the value 10 r + k everywhere)."""
    rows = []
    for r, (count, text) in enumerate([(count_left, "two bags"), (1, "a coat at the top left")]):
        row = {"image": f"{r}.png", "boxes": [[0.0, 0.0, 0.5, 0.5], [0.5, 0.0, 1.0, 0.5], [0, 0.5, 0.5, 1]][:count],
               "features": np.stack([np.full(3, 10.0 * r + k) for k in range(count)]), "text": text, "label": 2 - r,
               "answers": ["2", "two"] if r == 0 else ["coat"], "scores": [1.0, 0.3] if r == 0 else [0.6]}  # fmt: skip
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- a second dataset

SHAPES = ("circle", "square", "triangle", "star")


def shape_picture(index: int) -> tuple[Image.Image, str]:
    """A 64-pixel picture of one of SHAPES (scripts/make_example_data.py's drawing), seeded by `index`."""
    from vlmixer.scripts.make_example_data import shape_image

    shape = SHAPES[index % len(SHAPES)]
    return shape_image(shape, np.random.default_rng(index)), shape


def shape_row(task: str, index: int) -> tuple[dict, dict]:
    """(images by column, the other columns) of one row of `task` on shape pictures."""
    image, shape = shape_picture(index)
    boxes = [[0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 1.0, 1.0]] if index % 2 else [[0.0, 0.0, 1.0, 1.0]]
    if task == "reasoning":
        right, right_shape = shape_picture(index + 1 + index % 3)
        return {"image_left": image, "image_right": right}, {
            "boxes_left": boxes, "boxes_right": [[0.0, 0.0, 1.0, 1.0]], "text": "both pictures show the same shape.",
            "label": "true" if shape == right_shape else "false"}  # fmt: skip
    columns = {
        "retrieval": {"text": f"a picture of a {shape}.", "objects": [shape]},
        "vqa": {"text": "which shape is this?", "answers": [shape], "scores": [1.0]},
        "classification": {"text": f"a {SHAPES[index % 3]}.", "label": ["contradiction", "entailment"][index % 3 == index % 4]},
        "captioning": {"references": [f"a {shape}.", f"a picture of a {shape}."]},
    }[task]  # fmt: skip
    return {"image": image}, {"boxes": boxes, **columns}


def shape_split_rows(task: str, split: str) -> list[tuple[dict, dict]]:
    offset = {"train": 0, "validation": 100, "test": 200}[split]
    return [shape_row(task, offset + index) for index in range(SPLIT_ROWS[split])]


def write_shape_imagefolder(folder: Path, task: str) -> Path:
    """An `imagefolder`: <split>/<n>.png and <split>/metadata.jsonl (`file_name`, or `image_left_file_name` and
    `image_right_file_name` for two images), the other columns beside them."""
    for split in SPLIT_ROWS:
        (folder / split).mkdir(parents=True)
        lines = []
        for index, (images, columns) in enumerate(shape_split_rows(task, split)):
            names = {}
            for column, image in images.items():
                name = f"{index}-{column}.png"
                image.save(folder / split / name)
                names["file_name" if column == "image" else f"{column}_file_name"] = name
            lines.append(json.dumps({**names, **columns}))
        (folder / split / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def write_shape_json_lines(folder: Path, task: str) -> dict[str, Path]:
    """<split>.jsonl files whose image columns are paths relative to the file: images/<split>-<n>-<column>.png."""
    (folder / "images").mkdir(parents=True)
    files = {}
    for split in SPLIT_ROWS:
        rows = []
        for index, (images, columns) in enumerate(shape_split_rows(task, split)):
            paths = {}
            for column, image in images.items():
                paths[column] = f"images/{split}-{index}-{column}.png"
                image.save(folder / paths[column])
            rows.append({**paths, **columns})
        files[split] = folder / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps(row) + "\n" for row in rows))
    return files


def write_shape_saved_dataset(folder: Path, task: str) -> Path:
    """A `save_to_disk` DatasetDict whose image columns are `Image` features (the pictures stored as PNG bytes)."""
    from datasets import Dataset, DatasetDict, Features, Image as ImageFeature

    splits = {}
    for split in SPLIT_ROWS:
        rows = [{**images, **columns} for images, columns in shape_split_rows(task, split)]
        dataset = Dataset.from_list(rows)
        splits[split] = dataset.cast(Features({**dataset.features, **{c: ImageFeature() for c in rows[0] if c.startswith("image")}}))
    DatasetDict(splits).save_to_disk(str(folder))
    return folder


def folder_snapshot(folder: Path) -> dict:
    return {str(path.relative_to(folder)): path.stat().st_mtime_ns for path in sorted(folder.rglob("*"))}


# ============================================================================================== collators


def test_regions_and_text_collator_pads_regions_and_caption_labels(processor):
    rows = rows_with_features(3)
    batch = DataCollatorForRegionsAndText(processor, caption_labels=True, return_loss=True)(rows)
    assert batch["visual_features"].shape == (2, 3, 3) and batch["visual_boxes"].shape == (2, 3, 4)
    assert batch["region_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["visual_features"][:, :, 0].tolist() == [[0.0, 1.0, 2.0], [10.0, 0.0, 0.0]]  # padding is zeros
    assert batch["visual_boxes"][1].tolist() == [[0.0, 0.0, 0.5, 0.5], [0.0] * 4, [0.0] * 4]
    expected = processor(text=["two bags", "a coat at the top left"], cmc_ratio=0.0)
    assert torch.equal(batch["input_ids"], expected["input_ids"])  # the processor's text rows, unchanged
    # [CLS] two bags [SEP] and [CLS] a coat at the top left [SEP]
    assert batch["input_ids"].shape == (2, 8) and batch["attention_mask"][0].tolist() == [1] * 4 + [0] * 4
    assert batch["labels"][0].tolist() == batch["input_ids"][0, :4].tolist() + [IGNORE_INDEX] * 4
    assert torch.equal(batch["labels"][1], batch["input_ids"][1])
    assert batch["return_loss"] is True
    images_only = DataCollatorForRegionsAndText(processor, text_column=None)(rows)
    assert sorted(images_only) == ["region_mask", "visual_boxes", "visual_features"]


def test_image_text_collator_is_the_processors_joint_sequence_with_labels(processor):
    rows = rows_with_features(2)
    batch = DataCollatorForImageText(processor)(rows)
    expected = processor(text=[r["text"] for r in rows], region_features=[r["features"] for r in rows],
                         boxes=[r["boxes"] for r in rows])  # fmt: skip
    for name in ("input_ids", "attention_mask", "token_type_ids", "visual_features", "visual_boxes"):
        assert torch.equal(batch[name], expected[name]), name
    assert batch["visual_features"].shape == (3, 3) and batch["visual_features"][:, 0].tolist() == [0.0, 1.0, 10.0]
    assert batch["labels"].tolist() == [2, 1] and batch["labels"].dtype == torch.long
    vqa = DataCollatorForImageText(processor, answer_to_id={"2": 0, "two": 1, "3": 2})(rows)
    torch.testing.assert_close(vqa["labels"], torch.tensor([[1.0, 0.3, 0.0], [0.0, 0.0, 0.0]]))  # "coat": unknown


def test_reasoning_collator_stacks_the_two_images_of_each_example(processor):
    rows = []
    for r in range(2):
        rows.append({"image_left": "l.png", "boxes_left": [[0, 0, 1, 1]], "features_left": np.full((1, 3), 10.0 * r),
                     "image_right": "r.png", "boxes_right": [[0, 0, 0.5, 1], [0.5, 0, 1, 1]],
                     "features_right": np.full((2, 3), 10.0 * r + 1), "text": ["left has more", "no bag"][r],
                     "label": r})  # fmt: skip
    batch = DataCollatorForVisualReasoning(processor)(rows)
    assert batch["input_ids"].shape[:2] == (2, 2) and batch["token_type_ids"].shape == batch["input_ids"].shape
    flat = processor(text=["left has more", "left has more", "no bag", "no bag"],
                     region_features=[np.full((1, 3), 0.0), np.full((2, 3), 1.0), np.full((1, 3), 10.0),
                                      np.full((2, 3), 11.0)])  # fmt: skip
    assert torch.equal(batch["input_ids"].view(4, -1), flat["input_ids"])
    assert batch["visual_features"][:, 0].tolist() == [0.0, 1.0, 1.0, 10.0, 11.0, 11.0]  # left, right; per example
    assert batch["labels"].tolist() == [0, 1]


def test_pad_regions_needs_nothing_but_the_features_and_boxes():
    padded = pad_regions([np.ones((1, 2)), np.full((2, 2), 3.0)], [[[0, 0, 1, 1]], [[0, 0, 1, 1], [0, 0, 0.5, 0.5]]])
    assert padded["visual_features"].tolist() == [[[1, 1], [0, 0]], [[3, 3], [3, 3]]]
    assert padded["region_mask"].tolist() == [[1, 0], [1, 1]]


# ============================================================================================== scripts

SCRIPTS = {  # task -> (head, Auto class name or None, a column its --help must name, its headline metric)
    "retrieval": (VLMixerForImageTextRetrieval, None, "objects", "mean_recall"),
    "vqa": (VLMixerForQuestionAnswering, "AutoModelForVisualQuestionAnswering", "scores", "accuracy"),
    "reasoning": (VLMixerForVisualReasoning, None, "image_left", "accuracy"),
    "classification": (VLMixerForSequenceClassification, "AutoModelForSequenceClassification", "label", "macro_f1"),
    "captioning": (VLMixerForCaptioning, "AutoModelForImageTextToText", "references", "CIDEr"),
}
# The issue's run: evaluation and checkpoints every 5 steps, 2 accumulated batches, 10 steps (all checkpoints kept)
ISSUE_FLAGS = ["--eval_strategy", "steps", "--eval_steps", "5", "--gradient_accumulation_steps", "2", "--save_strategy",
               "steps", "--save_steps", "5", "--max_steps", "10", "--save_total_limit", "3"]  # fmt: skip


def script(task: str):
    import importlib

    return importlib.import_module(f"vlmixer.scripts.finetune_{task}")


def fine_tune(task: str, model, output_dir: Path, cache_dir: Path, data: list[str], *flags: str) -> dict:
    """One in-process run of a task's script (small batches, offline); its JSON figures."""
    return script(task).main(["--model_name_or_path", str(model), *data, "--output_dir", str(output_dir),
                              "--cache_dir", str(cache_dir), "--per_device_train_batch_size", "2",
                              "--per_device_eval_batch_size", "4", "--learning_rate", "1e-3", "--max_steps", "2",
                              "--output", str(output_dir.parent / f"{output_dir.name}.json"), *flags])  # fmt: skip


@pytest.mark.parametrize("task", list(SCRIPTS))
def test_help_explains_the_data_format(task):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        script(task).main(["--help"])
    text = out.getvalue()
    for words in ("JSON lines", ".csv", ".parquet", "save_to_disk", "imagefolder", "--dataset_name", "--train_file",
                  "boxes", "Image feature", "Region features", SCRIPTS[task][2], "--from_scratch", "--push_to_hub",
                  "--eval_strategy", "--gradient_accumulation_steps", "--resume_from_checkpoint", "--deepspeed", "--fsdp",
                  "--bf16", "--dataloader_num_workers", "--logging_steps", "--save_strategy", "yaml"):  # fmt: skip
        assert words in text, (task, words)


def collated_test_batch(task: str, processor, tasks_dir, cache_dir):
    """Two test rows of `task` collated as the script collates them (region features added as the script adds them)."""
    from vlmixer.scripts.finetuning import DataTrainingArguments, load_raw_splits, region_feature_extractor
    from vlmixer.processing.tasks import add_region_features, prepare_split

    arguments = DataTrainingArguments(dataset_name=str(tasks_dir), dataset_config_name=task)
    raw, folders = load_raw_splits(arguments, str(cache_dir))
    test = prepare_split(raw["test"], task, "test", folders["test"]).select(range(2))
    rows = [{name: value for name, value in row.items() if name != "label"}  # logits need no labels
            for row in add_region_features(test, region_feature_extractor(processor), cache_dir)]  # fmt: skip
    if task == "captioning":
        return DataCollatorForRegionsAndText(processor)([{**row, "text": row["references"][0]} for row in rows])
    if task == "retrieval":
        return DataCollatorForRegionsAndText(processor)(rows)
    if task == "reasoning":
        return DataCollatorForVisualReasoning(processor)(rows)
    return DataCollatorForImageText(processor)(rows)


def logits_of(model, batch: dict) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        output = model(**batch)
    return output.logits_per_text if isinstance(model, VLMixerForImageTextRetrieval) else output.logits


def assert_no_pickle(folder: Path) -> None:
    """No pickle anywhere (training_args.bin, optimizer.pt, scheduler.pt, rng_state.pth): every checkpoint holds
    what resuming needs as safetensors + JSON."""
    pickled = [path for suffix in ("*.bin", "*.pkl", "*.pt", "*.pth") for path in folder.rglob(suffix)]
    assert not pickled, pickled
    for checkpoint in folder.glob("checkpoint-*"):
        for name in ("optimizer.safetensors", "optimizer.json", "scheduler.json", "rng_state.json", "rng_state.safetensors"):
            assert (checkpoint / name).is_file(), checkpoint / name


@pytest.mark.parametrize("task", list(SCRIPTS))
def test_scene_task_runs_offline_and_its_folder_reloads_with_a_model_card(task, tasks_dir, tiny_checkpoint, processor,
                                                                          cache_dir, tmp_path, monkeypatch):  # fmt: skip
    """The make_tasks.py folder as a `datasets` dataset with one configuration per task (JSON lines, image paths)."""
    import transformers

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    output_dir = tmp_path / "out"
    figures = fine_tune(task, tiny_checkpoint, output_dir, cache_dir,
                        ["--dataset_name", str(tasks_dir), "--dataset_config_name", task], *ISSUE_FLAGS)  # fmt: skip
    assert json.loads((tmp_path / "out.json").read_text()) == json.loads(json.dumps(figures))
    assert figures["task"] == task and figures["init"] == "pretrained" and figures["steps"] == 10
    assert figures["train_rows"] >= 8 and figures["validation_rows"] == figures["test_rows"] > 0
    head, auto_name, _, headline = SCRIPTS[task]
    assert 0.0 <= figures["test"][headline] <= 10.0
    batch = collated_test_batch(task, processor, tasks_dir, cache_dir)
    final = head.from_pretrained(output_dir)
    best = head.from_pretrained(figures["best_checkpoint"])  # the Trainer's checkpoint: the kept (best) model
    torch.testing.assert_close(logits_of(final, batch), logits_of(best, batch))
    if auto_name is not None:
        auto = getattr(transformers, auto_name).from_pretrained(output_dir)
        assert type(auto) is head
        torch.testing.assert_close(logits_of(auto, batch), logits_of(final, batch))
    assert type(transformers.AutoProcessor.from_pretrained(output_dir)).__name__ == "VLMixerProcessor"
    assert_no_pickle(output_dir)
    assert (output_dir / "training_args.json").exists() and (output_dir / "checkpoint-5" / "training_args.json").exists()
    results = json.loads((output_dir / "all_results.json").read_text())
    assert results["test_" + headline] == figures["test"][headline] and f"eval_{headline}" in results
    card = ModelCard.load(output_dir / "README.md")
    indexed = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert indexed[headline] == figures["test"][headline]
    assert {result.dataset_split for result in card.data.eval_results} == {"test"}
    assert card.data.eval_results[0].dataset_config == task and card.data.base_model == str(tiny_checkpoint)


def checkpoint_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("task", list(SCRIPTS))
def test_resume_from_a_checkpoint_of_a_saved_image_dataset_equals_the_uninterrupted_run(task, tiny_checkpoint,
                                                                                        cache_dir, tmp_path):  # fmt: skip
    """Shape pictures (not Fashion-MNIST) as a save_to_disk folder with `Image` columns: 10 steps in one go, and 5
    more steps resumed from the run's checkpoint-5 (optimizer, scheduler, RNG and data order restored) end with the
    same weights and the same loss logged over steps 6-10. The data folder is left as it was (derived data goes to --cache_dir)."""
    data = write_shape_saved_dataset(tmp_path / "shapes", task)
    before = folder_snapshot(data)
    flags = [*ISSUE_FLAGS, "--logging_steps", "5"]
    whole = fine_tune(task, tiny_checkpoint, tmp_path / "whole", cache_dir, ["--dataset_name", str(data)], *flags)
    resumed = fine_tune(task, tiny_checkpoint, tmp_path / "resumed", cache_dir, ["--dataset_name", str(data)], *flags,
                        "--resume_from_checkpoint", str(tmp_path / "whole" / "checkpoint-5"))  # fmt: skip
    assert whole["steps"] == resumed["steps"] == 10
    expected, got = (checkpoint_weights(tmp_path / run / "checkpoint-10") for run in ("whole", "resumed"))
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], msg=name)
    losses = [[entry["loss"] for entry in json.loads((tmp_path / run / "trainer_state.json").read_text())["log_history"]
               if "loss" in entry and entry["step"] == 10] for run in ("whole", "resumed")]  # fmt: skip
    assert losses[0] and losses[0] == pytest.approx(losses[1])
    headline = SCRIPTS[task][3]
    assert resumed["test"][headline] == pytest.approx(whole["test"][headline], abs=1e-6)
    assert folder_snapshot(data) == before


class Payload:
    """Unpickled, it would create `marker` (what a crafted checkpoint could run instead)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_resume_refuses_a_checkpoint_with_pickled_optimizer_state_and_runs_none_of_it(tiny_checkpoint, cache_dir,
                                                                                      tmp_path):  # fmt: skip
    """A checkpoint handed over with the Trainer's optimizer.pt (a pickle) in place of optimizer.safetensors: one line
    naming it, and the pickle is never opened."""
    import pickle

    data = write_shape_saved_dataset(tmp_path / "shapes", "classification")
    fine_tune("classification", tiny_checkpoint, tmp_path / "run", cache_dir, ["--dataset_name", str(data)],
              *ISSUE_FLAGS)  # fmt: skip
    checkpoint, marker = tmp_path / "run" / "checkpoint-5", tmp_path / "payload-ran"
    (checkpoint / "optimizer.safetensors").unlink()
    (checkpoint / "optimizer.pt").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(SystemExit) as refused:
        fine_tune("classification", tiny_checkpoint, tmp_path / "resumed", cache_dir, ["--dataset_name", str(data)],
                  *ISSUE_FLAGS, "--resume_from_checkpoint", str(checkpoint))  # fmt: skip
    message = str(refused.value.code)
    assert "optimizer.safetensors" in message and "optimizer.pt" in message and "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("task", list(SCRIPTS))
def test_imagefolder_and_json_lines_of_another_dataset_fine_tune(task, tiny_checkpoint, cache_dir, tmp_path):
    """The shape pictures as an `imagefolder` (metadata.jsonl beside the images) and as JSON-lines split files whose
    image paths are relative to the file: both train with the issue's flags, evaluate and test, and the imagefolder
    run resumed from its checkpoint-5 ends with the uninterrupted run's weights."""
    folder = write_shape_imagefolder(tmp_path / "imagefolder", task)
    from_folder = fine_tune(task, tiny_checkpoint, tmp_path / "from-folder", cache_dir, ["--dataset_name", str(folder)],
                            *ISSUE_FLAGS)  # fmt: skip
    files = write_shape_json_lines(tmp_path / "jsonl", task)
    from_files = fine_tune(task, tiny_checkpoint, tmp_path / "from-files", cache_dir,
                           ["--train_file", str(files["train"]), "--validation_file", str(files["validation"]),
                            "--test_file", str(files["test"])], *ISSUE_FLAGS)  # fmt: skip
    train_rows = 2 * SPLIT_ROWS["train"] if task == "captioning" else SPLIT_ROWS["train"]  # a row per reference
    for figures in (from_folder, from_files):
        assert (figures["train_rows"], figures["validation_rows"], figures["test_rows"]) == (train_rows, 4, 4)
        assert figures["steps"] == 10 and SCRIPTS[task][3] in figures["test"]
    # the same pictures and columns either way: the same region features, so the same run
    assert from_folder["train_loss"] == pytest.approx(from_files["train_loss"], rel=1e-4)
    fine_tune(task, tiny_checkpoint, tmp_path / "resumed", cache_dir, ["--dataset_name", str(folder)], *ISSUE_FLAGS,
              "--resume_from_checkpoint", str(tmp_path / "from-folder" / "checkpoint-5"))  # fmt: skip
    expected, got = (checkpoint_weights(tmp_path / run / "checkpoint-10") for run in ("from-folder", "resumed"))
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], msg=name)


def test_from_scratch_starts_from_the_text_encoder_alone(tiny_checkpoint, minilm_path):
    """--from_scratch: all-MiniLM-L6-v2's text weights, the checkpoint's vision settings, no pre-trained weights."""
    from transformers import BertModel

    from vlmixer.scripts.finetuning import ModelArguments, load_model

    args = ModelArguments(model_name_or_path=str(tiny_checkpoint), from_scratch=True, bert_model=minilm_path)
    model = load_model(VLMixerForSequenceClassification, args, seed=0, num_labels=3)
    bert = BertModel.from_pretrained(minilm_path)
    assert model.config.hidden_size == bert.config.hidden_size == 384
    assert model.config.visual_feature_dim == FEATURE_DIM and model.config.vision_backbone == "precomputed"
    torch.testing.assert_close(model.vlmixer.embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight)
    torch.testing.assert_close(model.vlmixer.encoder.layer[5].output.dense.weight, bert.encoder.layer[5].output.dense.weight)


def test_arguments_come_from_one_json_or_yaml_file(tasks_dir, tiny_checkpoint, cache_dir, tmp_path):
    """HfArgumentParser's file forms: the same run from a JSON file and a YAML file."""
    import yaml

    settings = {"model_name_or_path": str(tiny_checkpoint), "dataset_name": str(tasks_dir),
                "dataset_config_name": "classification", "cache_dir": str(cache_dir), "max_steps": 2,
                "per_device_train_batch_size": 2, "per_device_eval_batch_size": 4, "learning_rate": 1e-3}  # fmt: skip
    (tmp_path / "run.json").write_text(json.dumps({**settings, "output_dir": str(tmp_path / "json")}))
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({**settings, "output_dir": str(tmp_path / "yaml")}))
    from_json = script("classification").main([str(tmp_path / "run.json")])
    from_yaml = script("classification").main([str(tmp_path / "run.yaml")])
    assert from_json["steps"] == from_yaml["steps"] == 2
    assert from_json["train_loss"] == from_yaml["train_loss"]


TWO_PROCESS_LAUNCHERS = {
    "torchrun": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    "accelerate": ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no"],
}  # fmt: skip


@pytest.mark.parametrize("launcher", list(TWO_PROCESS_LAUNCHERS))
def test_two_processes_fine_tune_as_one_and_only_the_main_process_writes(tasks_dir, tiny_checkpoint, cache_dir,
                                                                         tmp_path, launcher):  # fmt: skip
    """2 CPU processes (gloo) with the same global batch, under torchrun and accelerate launch: one JSON line, one
    report, the processor and arguments written once, and the same training loss as one process."""
    import subprocess

    common = ["--model_name_or_path", str(tiny_checkpoint), "--dataset_name", str(tasks_dir), "--dataset_config_name",
              "classification", "--cache_dir", str(cache_dir), "--max_steps", "2", "--per_device_eval_batch_size", "4",
              "--learning_rate", "1e-3", "--seed", "0"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    script_path = str(REPO_ROOT / "scripts" / "finetune_classification.py")
    one = subprocess.run([sys.executable, script_path, *common, "--per_device_train_batch_size", "4", "--output_dir",
                          str(tmp_path / "one"), "--output", str(tmp_path / "one.json")],
                         capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, *TWO_PROCESS_LAUNCHERS[launcher], script_path, *common, "--per_device_train_batch_size", "2", "--output_dir",
                          str(tmp_path / "two"), "--output", str(tmp_path / "two.json")],
                         capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    json_lines = [line for line in two.stdout.splitlines() if line.startswith('{"')]  # Trainer logs print as dicts
    assert len(json_lines) == 1, two.stdout[-2000:]
    one_figures, two_figures = json.loads((tmp_path / "one.json").read_text()), json.loads(json_lines[0])
    assert two_figures == json.loads((tmp_path / "two.json").read_text())
    assert two_figures["train_loss"] == pytest.approx(one_figures["train_loss"], rel=1e-3)
    assert (tmp_path / "two" / "processor_config.json").exists() and (tmp_path / "two" / "training_args.json").exists()
