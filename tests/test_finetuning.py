"""The fine-tuning collators (hand-checked shapes and values) and scripts (each runs end to end offline on a handful of
generated scenes with a tiny model, its output folder reloads with from_pretrained / the Auto class and gives the same
logits, and --help explains the data format)."""

import contextlib
import io
import json
import os
import sys

import numpy as np
import pytest
import torch
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
from vlmixer.processing.tasks import TaskConfig, cache_region_features, load_task_split, staged_directory, write_tasks

from .conftest import REPO_ROOT

FEATURE_DIM = 1280  # what the demo checkpoint's processor (efficientnet-lite0) gives; the cache file is named by it
TINY_TASKS = dict(scenes={"train": 8, "validation": 4, "test": 4}, pool_per_class={"train": 3, "validation": 2, "test": 2})


# ============================================================================================== fixtures


class PixelFeatures:
    """A stand-in for the backbone: each crop's grey pixels, repeated to FEATURE_DIM values (fast, content-true)."""

    backbone_id = "efficientnet-lite0"
    feature_dim = FEATURE_DIM

    def encode_crops(self, crops) -> np.ndarray:
        grey = [np.asarray(crop.convert("L"), dtype=np.float32).ravel() / 255.0 for crop in crops]
        return np.stack([np.resize(pixels, FEATURE_DIM) for pixels in grey])


@pytest.fixture(scope="module")
def processor(minilm_path) -> VLMixerProcessor:
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    return VLMixerProcessor(tokenizer, efficientnet_image_processor(112), backbone_id="efficientnet-lite0")


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory):
    """A handful of scenes of every task, with the region-feature cache the scripts look for."""
    directory = tmp_path_factory.mktemp("finetune") / "tasks"
    with staged_directory(directory) as root:
        write_tasks(root, TaskConfig(**TINY_TASKS), progress=False)
    scenes = [load_task_split(directory / "scenes", split) for split in ("train", "validation", "test")]
    cache_region_features(scenes, directory, "efficientnet-lite0", 112, extractor=PixelFeatures(), progress=False)
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


def rows_with_features(count_left: int, count_right: int | None = None) -> list[dict]:
    """Two hand-made rows whose regions carry their features (row r, region k: the value 10 r + k everywhere)."""
    rows = []
    for r, (count, text) in enumerate([(count_left, "two bags"), (1, "a coat at the top left")]):
        row = {"image": f"{r}.png", "boxes": [[0.0, 0.0, 0.5, 0.5], [0.5, 0.0, 1.0, 0.5], [0, 0.5, 0.5, 1]][:count],
               "features": np.stack([np.full(3, 10.0 * r + k) for k in range(count)]), "text": text, "label": 2 - r,
               "answers": ["2", "two"] if r == 0 else ["coat"], "scores": [1.0, 0.3] if r == 0 else [0.6]}  # fmt: skip
        rows.append(row)
    return rows


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

SCRIPTS = {  # task -> (head, Auto class name or None, a column its --help must name)
    "retrieval": (VLMixerForImageTextRetrieval, None, "objects"),
    "vqa": (VLMixerForQuestionAnswering, "AutoModelForVisualQuestionAnswering", "scores"),
    "reasoning": (VLMixerForVisualReasoning, None, "image_left"),
    "classification": (VLMixerForSequenceClassification, "AutoModelForSequenceClassification", "label"),
    "captioning": (VLMixerForCaptioning, "AutoModelForImageTextToText", "references"),
}


def script(task: str):
    import importlib

    return importlib.import_module(f"vlmixer.scripts.finetune_{task}")


@pytest.mark.parametrize("task", list(SCRIPTS))
def test_help_explains_the_data_format(task):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        script(task).main(["--help"])
    text = out.getvalue()
    for words in ("JSON lines", ".csv", ".parquet", "save_to_disk", "boxes", "image", "region_features",
                  SCRIPTS[task][2], "--from_scratch", "--push_to_hub"):  # fmt: skip
        assert words in text, (task, words)


def collated_test_batch(task: str, processor, tasks_dir):
    """Two test rows of `task` collated as the script collates them (features from the cache)."""
    from vlmixer.scripts.finetuning import region_cache

    rows = [load_task_split(tasks_dir, "test", task=task)[i] for i in range(2)]
    args = type("Args", (), {"data_dir": str(tasks_dir), "region_features": None})()
    cache = region_cache(args, processor, [rows])
    if task in ("retrieval", "captioning"):
        if task == "captioning":
            rows = [{**row, "text": row["references"][0]} for row in rows]
        return DataCollatorForRegionsAndText(processor, cache)(rows)
    if task == "reasoning":
        return DataCollatorForVisualReasoning(processor, cache)(rows)
    return DataCollatorForImageText(processor, cache)(rows)


def logits_of(model, batch: dict) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        output = model(**batch)
    return output.logits_per_text if isinstance(model, VLMixerForImageTextRetrieval) else output.logits


@pytest.mark.parametrize("task", list(SCRIPTS))
def test_script_runs_offline_and_its_folder_reloads_with_the_same_logits(task, tasks_dir, tiny_checkpoint, processor,
                                                                         tmp_path, monkeypatch):  # fmt: skip
    import transformers

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    output_dir, report_file = tmp_path / "out", tmp_path / "report.json"
    figures = script(task).main(["--model", str(tiny_checkpoint), "--data_dir", str(tasks_dir), "--output_dir",
                                 str(output_dir), "--max_steps", "2", "--per_device_train_batch_size", "4",
                                 "--per_device_eval_batch_size", "4", "--output", str(report_file),
                                 "--learning_rate", "1e-3"])  # fmt: skip
    assert json.loads(report_file.read_text()) == json.loads(json.dumps(figures))
    assert figures["task"] == task and figures["init"] == "pretrained" and figures["steps"] == 2
    headline = {"retrieval": "mean_recall", "vqa": "accuracy", "reasoning": "accuracy", "classification": "macro_f1",
                "captioning": "CIDEr"}[task]  # fmt: skip
    assert 0.0 <= figures["test"][headline] <= 10.0
    head, auto_name, _ = SCRIPTS[task]
    batch = collated_test_batch(task, processor, tasks_dir)
    final = head.from_pretrained(output_dir)
    best = head.from_pretrained(figures["best_checkpoint"])  # the Trainer's checkpoint: the kept (best) model
    torch.testing.assert_close(logits_of(final, batch), logits_of(best, batch))
    if auto_name is not None:
        auto = getattr(transformers, auto_name).from_pretrained(output_dir)
        assert type(auto) is head
        torch.testing.assert_close(logits_of(auto, batch), logits_of(final, batch))
    assert type(transformers.AutoProcessor.from_pretrained(output_dir)).__name__ == "VLMixerProcessor"
    pickles = [p.name for p in output_dir.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    assert pickles == [] and (output_dir / "training_args.json").exists()


def test_from_scratch_starts_from_the_text_encoder_alone(tasks_dir, tiny_checkpoint, minilm_path, tmp_path):
    """--from_scratch: all-MiniLM-L6-v2's text weights, the checkpoint's vision settings, no pre-trained weights."""
    from vlmixer.scripts.finetuning import load_model

    args = type("Args", (), {"from_scratch": True, "model": str(tiny_checkpoint), "bert_model": minilm_path, "seed": 0})()
    model = load_model(VLMixerForSequenceClassification, args, num_labels=3)
    bert = transformers_bert(minilm_path)
    assert model.config.hidden_size == bert.config.hidden_size == 384
    assert model.config.visual_feature_dim == FEATURE_DIM and model.config.vision_backbone == "precomputed"
    torch.testing.assert_close(model.vlmixer.embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight)
    torch.testing.assert_close(model.vlmixer.encoder.layer[5].output.dense.weight, bert.encoder.layer[5].output.dense.weight)


def transformers_bert(path):
    from transformers import BertModel

    return BertModel.from_pretrained(path)


TWO_PROCESS_LAUNCHERS = {
    "torchrun": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    "accelerate": ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no"],
}  # fmt: skip


@pytest.mark.parametrize("launcher", list(TWO_PROCESS_LAUNCHERS))
def test_two_processes_fine_tune_as_one_and_only_the_main_process_writes(tasks_dir, tiny_checkpoint, tmp_path,
                                                                         launcher):  # fmt: skip
    """2 CPU processes (gloo) with the same global batch, under torchrun and accelerate launch: one JSON line, one
    report, the processor and arguments written once, and the same training loss as one process."""
    import subprocess

    common = ["--model", str(tiny_checkpoint), "--data_dir", str(tasks_dir), "--max_steps", "2",
              "--per_device_eval_batch_size", "4", "--learning_rate", "1e-3", "--seed", "0"]  # fmt: skip
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
