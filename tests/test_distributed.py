"""scripts/pretrain.py on 2 CPU processes (gloo) under torchrun and accelerate launch: the same global batch gives the
losses and parameter updates of 1 process, one process writes, and a killed 2-process run resumes exactly."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from vlmixer.modeling_vlmixer import VLMixerConfig, VLMixerForPreTraining

from .conftest import REPO_ROOT
from .test_pretraining import FEATURE_DIM, tiny_gallery


pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")

STEPS, GLOBAL_BATCH, SEED = 6, 8, 3  # seed 3 picks text, text, pairs, tags, text, tags: every stream in 4 steps
MODEL = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=128, visual_feature_dim=FEATURE_DIM, vision_backbone="precomputed",
             feature_source="test-features", projection_dim=16, hidden_dropout_prob=0.0,
             attention_probs_dropout_prob=0.0)  # fmt: skip  (no dropout: its masks are drawn per process)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
RELATIVE = 1e-5


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distributed_inputs")
    tiny_gallery().save(folder / "gallery")
    rng = np.random.default_rng(0)
    items = ["dress", "sandals", "bag", "t-shirt", "trousers", "ankle boots", "sneakers", "coat", "shirt", "sweater"]
    lines = [f"She bought a {rng.choice(items)} and a {rng.choice(items)} at the market." for _ in range(120)]
    (folder / "corpus.txt").write_text("\n".join(lines) + "\n")
    (folder / "model.json").write_text(json.dumps(MODEL))
    return folder


def command(inputs: Path, output_dir: Path, processes: int, *extra: str, steps: int = STEPS,
            streams: str = "text=1,tags=1,pairs=1") -> list[str]:  # fmt: skip
    return [
        str(REPO_ROOT / "scripts" / "pretrain.py"), "--text_corpus", str(inputs / "corpus.txt"), "--gallery",
        str(inputs / "gallery"), "--model_config", str(inputs / "model.json"), "--output_dir", str(output_dir),
        "--max_steps", str(steps), "--batch_size", str(GLOBAL_BATCH // processes), "--logging_steps", "1",
        "--checkpointing_steps", "1", "--warmup_steps", "0", "--learning_rate", "1e-3", "--seed", str(SEED),
        "--stream_weights", streams, "--config_overrides", '{"momentum_queue_size": 16}', *extra,
    ]  # fmt: skip


def environment() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_USE_CPU", None)  # the script must be right by itself
    return env


def run(launcher: list[str], arguments: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs to the end; a run still going after `timeout` (a hang) is killed with its workers and fails the test."""
    process = subprocess.Popen([*launcher, *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=environment())  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_with_workers(process)
        stdout, stderr = process.communicate()
        pytest.fail(f"{' '.join(launcher[:4])} ran past {timeout} s (a hang?): {stderr[-2000:]}")
    assert process.returncode == 0, stderr[-3000:]
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`, and theirs (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            direct = [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in direct:
            found += [child, *children(child)]
    return found


def kill_with_workers(process: subprocess.Popen) -> list[int]:
    """SIGKILL to a launcher and all its workers (torchrun starts them in sessions of their own); their pids."""
    workers = children(process.pid)
    for pid in [*workers, process.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()
    return workers


def metrics(output_dir: Path) -> list[dict]:
    with (output_dir / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def initial_weights() -> dict[str, torch.Tensor]:
    """The model pretrain.py builds from --model_config before its first step (set_seed(seed), then the model)."""
    from accelerate.utils import set_seed

    set_seed(SEED)
    model = VLMixerForPreTraining(VLMixerConfig(**MODEL, momentum_queue_size=16))
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def one_process(inputs, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("one") / "run"
    run([sys.executable], command(inputs, output_dir, 1))
    return output_dir


def relative_difference(first: float, second: float) -> float:
    return abs(first - second) / max(abs(first), 1e-12)


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes_train_as_one_with_the_same_global_batch(inputs, one_process, tmp_path, launcher):
    output_dir = tmp_path / "run"
    result = run(TORCHRUN if launcher == "torchrun" else ACCELERATE, command(inputs, output_dir, 2))

    # one writer: one JSON line, metrics rows not doubled, one final/ folder
    json_lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(json_lines) == 1 and json.loads(json_lines[0])["processes"] == 2
    expected, logged = metrics(one_process), metrics(output_dir)
    assert [int(row["step"]) for row in logged] == list(range(1, STEPS + 1))
    assert (output_dir / "final" / "model.safetensors").is_file()
    assert not [path.name for path in output_dir.iterdir() if path.name.startswith(".")]

    # every loss component, the learning rate and the CMC share of every step: those of one process
    worst = {}
    for one, two in zip(expected, logged, strict=True):
        assert [name for name, value in one.items() if value] == [name for name, value in two.items() if value]
        for name, value in one.items():
            if value and name != "step":
                worst[name] = max(worst.get(name, 0.0), relative_difference(float(value), float(two[name])))
    assert {"mlm_loss", "patch_word_loss", "contrastive_loss", "patch_alignment_loss", "tag_mlm_loss",
            "paired_mlm_loss", "paired_contrastive_loss", "paired_matching_loss"} <= set(worst)  # fmt: skip
    print(f"{launcher}: largest relative loss difference per component over {STEPS} steps: {worst}")
    assert max(worst.values()) < RELATIVE, worst

    # the gradients and the parameter update of the first step (a text step)
    assert_same_first_step(one_process, output_dir)


def assert_same_first_step(reference: Path, other: Path) -> None:
    """
    The first step's gradients, as AdamW's first moments (0.1 x gradient) in the step-1 checkpoints, within 1e-5 of
    each tensor's largest; and the update of the whole model within 1e-4 of its norm. AdamW's update divides each
    gradient by its magnitude, which turns float-summation noise on gradients near zero into visible differences
    of single elements (gradients that are zero in exact arithmetic, the attention key biases, are 1e-14 of noise;
    some 1e-8 gradients move by a few 1e-6): the update is compared as a whole, not element by element.
    """
    first, second = (load_file(str(run / "checkpoints" / "step_1" / "optimizer.safetensors")) for run in (reference, other))
    moments = [name for name in first if name.endswith(".exp_avg")]
    largest = max(first[name].abs().max().item() for name in moments)
    for name in moments:
        atol = RELATIVE * first[name].abs().max().item() + 1e-9 * largest
        torch.testing.assert_close(second[name], first[name], rtol=0, atol=atol, msg=name)
    states = [initial_weights(), weights(reference / "checkpoints" / "step_1"), weights(other / "checkpoints" / "step_1")]
    names = sorted(name for name in states[1] if not name.startswith("momentum."))  # tied weights saved once
    before, after_one, after_two = (torch.cat([state[name].flatten() for name in names]) for state in states)
    update = after_one - before
    assert update.norm() > 0.1, "the first step moved nothing: a learning rate of 0?"
    assert ((after_two - before) - update).norm() / update.norm() < 10 * RELATIVE


@pytest.mark.parametrize("stream", ["tags", "pairs"])  # pairs: hard negatives drawn from the whole global batch
def test_one_step_of_each_image_stream_updates_as_one_process(inputs, tmp_path, stream):
    arguments = dict(steps=2, streams=f"{stream}=1")  # a checkpoint after step 1
    run([sys.executable], command(inputs, tmp_path / "one", 1, "--no_final_model", **arguments))
    run(TORCHRUN, command(inputs, tmp_path / "two", 2, "--no_final_model", **arguments))
    assert_same_first_step(tmp_path / "one", tmp_path / "two")


def test_killed_two_process_run_resumes_exactly(inputs, tmp_path):
    uninterrupted = tmp_path / "uninterrupted"
    run(TORCHRUN, command(inputs, uninterrupted, 2, "--no_final_model"))

    killed = tmp_path / "killed"
    process = subprocess.Popen([*TORCHRUN, *command(inputs, killed, 2, "--no_final_model")], env=environment(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step_2" / "checkpoint.json").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before its step-2 checkpoint"
        time.sleep(0.02)
    assert len(kill_with_workers(process)) == 2
    assert not (killed / "checkpoints" / f"step_{STEPS - 1}").exists(), "killed too late to test a resume"

    resumed = run(TORCHRUN, command(inputs, killed, 2, "--no_final_model", "--resume_from_checkpoint", "latest"))
    figures = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert 2 <= figures["resumed_from_step"] < STEPS
    assert metrics(killed) == metrics(uninterrupted)  # to the last digit


def test_dataloader_workers_collate_the_same_batches_and_resume_exactly(inputs, one_process, tmp_path):
    workers = ("--dataloader_num_workers", "2")
    ahead = tmp_path / "workers"
    run([sys.executable], command(inputs, ahead, 1, *workers, "--no_final_model"))
    assert metrics(ahead) == metrics(one_process)  # the batches of the main process, to the last digit

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, *command(inputs, killed, 1, *workers, "--no_final_model")],
                               env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step_2" / "checkpoint.json").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before its step-2 checkpoint"
        time.sleep(0.02)
    kill_with_workers(process)
    assert not (killed / "checkpoints" / f"step_{STEPS - 1}").exists(), "killed too late to test a resume"
    run([sys.executable], command(inputs, killed, 1, *workers, "--no_final_model", "--resume_from_checkpoint", "latest"))
    assert metrics(killed) == metrics(one_process)
