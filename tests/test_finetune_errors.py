"""Bad input to the fine-tuning scripts (issue 13): options out of range or refused (TrainingArguments' own checks
too), missing or malformed data, an image that cannot be read, a model folder without tokenizer files, a missing
model, a malformed answers.json. Each ends the script with one line naming the problem (exit status 2 for options, 1
for the rest), no traceback."""

import json
import shutil
import subprocess
import sys

import pytest

from .conftest import REPO_ROOT
from .test_finetuning import cache_dir, processor, script, tasks_dir, tiny_checkpoint  # noqa: F401 (fixtures)


def refusal(task: str, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        script(task).main(argv)
    code = exit_info.value.code
    assert isinstance(code, str), f"exit {code}, not a message"
    assert "\n" not in code and "Traceback" not in code
    return code


def base_argv(model, data_dir, output_dir, task: str | None = None) -> list[str]:
    """--model (the short alias of --model_name_or_path), the data folder and, for make_tasks.py data, its task."""
    config = ["--dataset_config_name", task] if task else []
    return ["--model", str(model), "--dataset_name", str(data_dir), *config, "--output_dir", str(output_dir),
            "--max_steps", "1"]  # fmt: skip


@pytest.mark.parametrize(
    "task, option, value, message",
    [
        ("classification", "--learning_rate", "-1", "--learning_rate must be a positive number, got -1.0"),
        ("classification", "--learning_rate", "nan", "--learning_rate must be a positive number, got nan"),
        ("vqa", "--max_length", "0", "--max_length must be at least 4"),
        ("reasoning", "--warmup_steps", "nan", "--warmup_steps must be 0 or more (below 1: a share of the steps), got nan"),
        ("reasoning", "--warmup_steps", "-1", "Got warmup_steps = -1.0, Expected value warmup_steps >= 0"),  # TrainingArguments'

        ("reasoning", "--gradient_accumulation_steps", "0", "--gradient_accumulation_steps must be a positive integer"),
        ("retrieval", "--per_device_train_batch_size", "0", "--per_device_train_batch_size must be a positive integer"),
        ("retrieval", "--rerank_k", "-3", "--rerank_k must be 0 or more, got -3"),
        ("captioning", "--generation_num_beams", "0", "--generation_num_beams must be a positive integer, got 0"),
        ("classification", "--max_steps", "0", "--max_steps must be -1 (use --num_train_epochs) or a positive"),
        ("vqa", "--max_train_samples", "0", "--max_train_samples must be a positive integer, got 0"),
    ],
)
def test_options_out_of_range_are_one_line_errors(tmp_path, capsys, task, option, value, message):
    argv = ["--output_dir", str(tmp_path / "out"), option, value]
    with pytest.raises(SystemExit) as exit_info:
        script(task).main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "task, argv, message",
    [
        ("vqa", ["--remove_unused_columns", "True"], "--remove_unused_columns must stay False: the collators read"),
        ("vqa", ["--push_to_hub", "--hub_strategy", "every_save"], "--hub_strategy every_save is refused: it uploads"),
        ("classification", ["--predict_with_generate"], "--predict_with_generate"),  # captioning's alone
        ("retrieval", ["--eval_strategy", "steps"], "requires the save and eval strategy to match"),  # TrainingArguments'
        ("reasoning", ["--eval_strategy", "sometimes"], "sometimes"),
        ("vqa", ["--fsdp", "full_shard"], "--fsdp shards the model across processes: launch with torchrun"),
    ],
)
def test_refused_training_arguments_are_one_line_errors(tmp_path, capsys, task, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        script(task).main(["--output_dir", str(tmp_path / "out"), *argv])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"finetune_{task}.py: error: " in last or "error: " in last
    assert message in last, last


def test_missing_data_is_one_line_without_a_traceback(tmp_path, tiny_checkpoint):  # noqa: F811
    missing = tmp_path / "no-such-data"
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "finetune_classification.py"),
         *base_argv(tiny_checkpoint, missing, tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": "", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert completed.returncode == 1, completed.stderr
    assert "Traceback" not in completed.stderr
    assert completed.stderr.strip().splitlines()[-1] == f"finetune_classification: {missing} does not exist."


def test_a_model_folder_without_tokenizer_files_is_refused(tmp_path, tiny_checkpoint, tasks_dir):  # noqa: F811
    model = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_checkpoint, model)
    for name in ("tokenizer.json", "vocab.txt"):
        (model / name).unlink(missing_ok=True)
    message = refusal("vqa", base_argv(model, tasks_dir, tmp_path / "out", "vqa"))
    assert message.startswith(f"finetune_vqa: The tokenizer of {model} has 5 tokens for a model of "), message
    assert "tokenizer files (tokenizer.json or vocab.txt) are missing or wrong" in message


def test_a_missing_model_is_one_line(tmp_path, tasks_dir):  # noqa: F811
    message = refusal("reasoning", base_argv(tmp_path / "nowhere", tasks_dir, tmp_path / "out", "reasoning"))
    assert message.startswith(f"finetune_reasoning: Cannot load --model_name_or_path {tmp_path / 'nowhere'}: "), message


def test_missing_or_unreadable_images_and_bad_boxes_are_one_line(tmp_path, tiny_checkpoint, tasks_dir, cache_dir):  # noqa: F811
    rows = [json.loads(line) for line in (tasks_dir / "retrieval" / "train.jsonl").read_text().splitlines()]
    images = tasks_dir / "retrieval"

    def argv_for(changed: list[dict], name: str) -> list[str]:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in changed))
        return ["--model", str(tiny_checkpoint), "--train_file", str(folder / "train.jsonl"), "--output_dir",
                str(folder / "out"), "--cache_dir", str(cache_dir), "--eval_strategy", "no", "--do_eval", "False",
                "--load_best_model_at_end", "False", "--max_steps", "1"]  # fmt: skip

    absolute = [{**row, "image": str(images / row["image"])} for row in rows]
    message = refusal("retrieval", argv_for([{**absolute[0], "image": "nowhere.png"}, *absolute[1:]], "missing"))
    assert message.startswith("finetune_retrieval: 1 image file(s) of column 'image' are missing, e.g. "), message
    not_an_image = tmp_path / "text.png"
    not_an_image.write_text("not a picture")
    message = refusal("retrieval", argv_for([{**absolute[0], "image": str(not_an_image)}, *absolute[1:]], "unreadable"))
    assert message.startswith("finetune_retrieval: An image cannot be read: "), message
    bad_box = [{**row, "boxes": [[0.5, 0.0, 0.2, 1.0]]} if index == 3 else row for index, row in enumerate(absolute)]
    message = refusal("retrieval", argv_for(bad_box, "boxes"))
    assert message == ("finetune_retrieval: The train split, row 3, column 'boxes': a box has x2 <= x1 or y2 <= y1 "
                       "(got [[0.5, 0.0, 0.2, 1.0]])."), message  # fmt: skip
    message = refusal("retrieval", argv_for([{k: v for k, v in row.items() if k != "text"} for row in absolute], "text"))
    assert message.startswith("finetune_retrieval: The train split lacks the column(s) ['text']"), message


def test_a_malformed_answer_vocabulary_is_one_line(tmp_path, tiny_checkpoint, tasks_dir):  # noqa: F811
    data = tmp_path / "tasks"
    shutil.copytree(tasks_dir, data)
    answers = data / "vqa" / "answers.json"  # beside the train file: the default vocabulary
    argv = base_argv(tiny_checkpoint, data, tmp_path / "out", "vqa")
    for content, problem in (("[1, 2", "is not JSON"), (json.dumps({"a": 1}), "should hold a non-empty JSON list")):
        answers.write_text(content)
        message = refusal("vqa", argv)
        assert message.startswith(f"finetune_vqa: {answers} {problem}"), message
