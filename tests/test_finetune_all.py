"""scripts/finetune_all.py end to end on a tiny checkpoint, a tiny BERT for the scratch start and tiny scene tasks with
2 seeds (two tasks, one with a frozen-feature probe, to stay fast; every task's script has its own tests): the record (runs with curves, baselines, summary with mean / std / 95% interval and verdicts), the Markdown
table, the learning-curve PNGs, and --report_only re-tabulating the same table."""

import json

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from vlmixer.modeling_vlmixer import VLMixerConfig, VLMixerForPreTraining
from vlmixer.processing import VLMixerProcessor
from vlmixer.processing.processing_vlmixer import efficientnet_image_processor
from vlmixer.scripts import finetune_all
from vlmixer.scripts.checkpointing import staged_directory
from vlmixer.scripts.scene_tasks import TaskConfig, write_tasks

from .conftest import REPO_ROOT


TINY_TASKS = dict(scenes={"train": 8, "validation": 4, "test": 6}, pool_per_class={"train": 3, "validation": 2, "test": 2})


@pytest.fixture(scope="module")
def setup(tmp_path_factory, minilm_path):
    root = tmp_path_factory.mktemp("finetune-all")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    processor = VLMixerProcessor(tokenizer, efficientnet_image_processor(112), backbone_id="efficientnet-lite0")
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=64)  # fmt: skip
    config = VLMixerConfig(vocab_size=len(tokenizer), visual_feature_dim=1280, vision_backbone="precomputed",
                           feature_source="test-features", projection_dim=16, **small)  # fmt: skip
    torch.manual_seed(0)
    VLMixerForPreTraining(config).save_pretrained(root / "tiny")
    processor.save_pretrained(root / "tiny")
    BertModel(BertConfig(vocab_size=len(tokenizer), **small)).save_pretrained(root / "tiny-bert")
    with staged_directory(root / "tasks") as folder:
        write_tasks(folder, TaskConfig(**TINY_TASKS), progress=False)
    return root


def test_one_command_writes_the_record_table_and_curves(setup, capsys):
    root = setup
    argv = ["--model_name_or_path", str(root / "tiny"), "--dataset_name", str(root / "tasks"),
            "--bert_model", str(root / "tiny-bert"), "--output_dir", str(root / "runs"),
            "--record", str(root / "record.json"), "--figures_dir", str(root / "docs"),
            "--cache_dir", str(root / "cache"), "--seeds", "0", "1", "--fractions", "0.5", "--max_steps", "2",
            "--eval_steps", "1", "--per_device_train_batch_size", "2", "--learning_rate", "1e-3",
            "--tasks", "vqa", "retrieval", "--jobs", "2"]  # fmt: skip
    result = finetune_all.main(argv)
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1]) == json.loads(json.dumps(result))
    record = json.loads((root / "record.json").read_text())
    runs = record["runs"]
    # 2 tasks x 2 starts x (2 seeds + 1 fraction) + the VQA probe
    assert len(runs) == 2 * 2 * 3 + 1 and not [run for run in runs if "error" in run]
    for run in runs:  # the whole-split runs are validated at steps 1 and 2 (the curves), the others only tested
        assert len(run.get("curve", [])) == (2 if run["fraction"] == 1.0 and not run["probe"] else 0), run["name"]
    summary = record["summary"]
    assert set(summary) == {"vqa", "retrieval"}
    for task, entry in summary.items():
        for init in ("pretrained", "scratch"):
            stats = entry[init]
            assert stats["seeds"] == [0, 1] and len(stats["values"]) == 2
            assert stats["std"] >= 0 and stats["ci95"] == stats["ci95"]  # not NaN
            assert set(stats["fractions"]) == {"0.5", "1.0"}
        assert entry["baselines"] and "beats_baseline" in entry and "pretraining_beats_scratch" in entry
    assert summary["vqa"]["baselines"]["type_prior"] >= summary["vqa"]["baselines"]["majority"]
    assert summary["retrieval"]["baselines"]["chance"] == pytest.approx(1 / 6)
    assert "probe" in summary["vqa"] and "probe" not in summary["retrieval"]
    table = record["table"]
    assert table in out and "±" in table and "[±" in table and "majority" in table and "chance" in table
    assert "50% of train (seed 0)" in table and "100% of train (seed 0)" in table
    for task in ("vqa", "retrieval"):
        assert (root / "docs" / f"finetune_{task}.png").stat().st_size > 1000
    # the weights are not kept, the curves' trainer states are
    assert not list((root / "runs").rglob("*.safetensors"))
    again = finetune_all.main([*argv, "--report_only"])
    assert again["summary"] == json.loads(json.dumps(result["summary"]))


def test_wilson_interval_is_three_points_at_a_thousand():
    assert finetune_all.wilson(0.5, 1000) == pytest.approx(0.031, abs=0.001)


def test_reasoning_and_classification_baselines_come_from_the_data(setup):
    args = finetune_all.parse_args(["--dataset_name", str(setup / "tasks"), "--tasks", "reasoning", "classification"])
    base = finetune_all.baselines(args)
    assert base["reasoning"]["chance"] == 0.5 and base["classification"]["chance"] == pytest.approx(1 / 3)
    assert 0 <= base["reasoning"]["majority"] <= 1 and 0 <= base["classification"]["majority"] <= 1


def test_head_learns_at_its_multiple_of_the_learning_rate_and_the_frozen_encoder_not_at_all(setup, tmp_path):
    from vlmixer.modeling_vlmixer import VLMixerForQuestionAnswering
    from vlmixer.scripts.finetuning import FinetuningTrainingArguments, ModelArguments, TaskTrainer, load_model

    model = VLMixerForQuestionAnswering.from_pretrained(setup / "tiny", num_labels=3)
    args = FinetuningTrainingArguments(output_dir=str(tmp_path), learning_rate=1e-4, use_cpu=True,
                                       eval_strategy="no", save_strategy="no", load_best_model_at_end=False)  # fmt: skip
    trainer = TaskTrainer(model=model, args=args)
    trainer.head_learning_rate_multiplier = 10.0
    optimizer = trainer.create_optimizer()
    rates = {}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            rates[id(parameter)] = group["lr"]
    for name, parameter in model.named_parameters():
        assert rates[id(parameter)] == pytest.approx(1e-3 if not name.startswith("vlmixer.") else 1e-4), name
    frozen = load_model(VLMixerForQuestionAnswering, ModelArguments(model_name_or_path=str(setup / "tiny"),
                                                                    freeze_encoder=True), seed=0, num_labels=3)  # fmt: skip
    trainable = {name for name, parameter in frozen.named_parameters() if parameter.requires_grad}
    assert trainable and all(name.startswith("classifier.") for name in trainable)


def test_the_readme_fine_tuning_tables_are_the_recorded_sweep():
    """One source: the README's fine-tuning tables are the table `finetune_all.py` wrote into its record, and the PNGs
    it shows are the record's figures."""
    record = json.loads((REPO_ROOT / "results" / "finetune" / "results.json").read_text())
    readme = (REPO_ROOT / "README.md").read_text()
    assert record["table"].strip() in readme
    for figure in record["figures"]:
        assert f"({figure})" in readme and (REPO_ROOT / figure).is_file()
