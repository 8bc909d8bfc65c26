"""Bad input to the fine-tuning scripts (issue 13): options out of range, missing or malformed data, a model folder
without tokenizer files, a missing model or region-feature cache, a malformed answers.json. Each ends the script with
one line naming the problem (exit status 2 for options, 1 for the rest), no traceback."""

import json
import shutil
import subprocess
import sys

import pytest

from .conftest import REPO_ROOT
from .test_finetuning import processor, script, tasks_dir, tiny_checkpoint  # noqa: F401 (fixtures)


def refusal(task: str, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        script(task).main(argv)
    code = exit_info.value.code
    assert isinstance(code, str), f"exit {code}, not a message"
    assert "\n" not in code and "Traceback" not in code
    return code


def base_argv(model, data_dir, output_dir) -> list[str]:
    return ["--model", str(model), "--data_dir", str(data_dir), "--output_dir", str(output_dir), "--max_steps", "1"]


@pytest.mark.parametrize(
    "task, option, value, message",
    [
        ("classification", "--learning_rate", "-1", "--learning_rate must be a positive number, got -1.0"),
        ("classification", "--learning_rate", "nan", "--learning_rate must be a positive number, got nan"),
        ("vqa", "--max_length", "0", "--max_length must be at least 4"),
        ("reasoning", "--warmup_ratio", "1.5", "--warmup_ratio must be in [0, 1), got 1.5"),
        ("retrieval", "--per_device_train_batch_size", "0", "--per_device_train_batch_size must be a positive integer"),
        ("retrieval", "--rerank_k", "-3", "--rerank_k must be 0 or more, got -3"),
        ("captioning", "--num_beams", "0", "--num_beams must be a positive integer, got 0"),
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
    message = refusal("vqa", base_argv(model, tasks_dir, tmp_path / "out"))
    assert message.startswith(f"finetune_vqa: The tokenizer of {model} has 5 tokens for a model of "), message
    assert "tokenizer files (tokenizer.json or vocab.txt) are missing or wrong" in message


def test_a_missing_model_is_one_line(tmp_path, tasks_dir):  # noqa: F811
    message = refusal("reasoning", base_argv(tmp_path / "nowhere", tasks_dir, tmp_path / "out"))
    assert message.startswith(f"finetune_reasoning: Cannot load --model {tmp_path / 'nowhere'}: "), message


def test_a_missing_region_feature_cache_is_one_line(tmp_path, tiny_checkpoint, tasks_dir):  # noqa: F811
    cache = tmp_path / "features.safetensors"
    argv = [*base_argv(tiny_checkpoint, tasks_dir, tmp_path / "out"), "--region_features", str(cache)]
    message = refusal("retrieval", argv)
    assert message.startswith(f"finetune_retrieval: --region_features {cache}: {cache} does not exist"), message
    cache.write_bytes(b"\xff" * 64)  # not a safetensors file
    assert refusal("retrieval", argv).startswith(f"finetune_retrieval: --region_features {cache}: ")


def test_a_malformed_answer_vocabulary_is_one_line(tmp_path, tiny_checkpoint, tasks_dir):  # noqa: F811
    data = tmp_path / "tasks"
    shutil.copytree(tasks_dir, data)
    answers = data / "vqa" / "answers.json"
    argv = base_argv(tiny_checkpoint, data, tmp_path / "out")
    for content, problem in (("[1, 2", "is not JSON"), (json.dumps({"a": 1}), "should hold a non-empty JSON list")):
        answers.write_text(content)
        message = refusal("vqa", argv)
        assert message.startswith(f"finetune_vqa: {answers} {problem}"), message
