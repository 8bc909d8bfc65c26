"""scripts/checkpointing.py: pre-training checkpoints without pickle, checksummed, refusing anything else."""

import argparse
import json
import pickle
import random
import subprocess

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from transformers import get_scheduler

from vlmixer.modeling_vlmixer import VLMixerForPreTraining
from vlmixer.processing.collators import SeededCollator
from vlmixer.processing.streams import CHECKPOINT_MANIFEST, BatchStream, StreamChooser, checkpoint_dirs

from .conftest import tiny_config
from .test_pretraining import pretrain_command, run_inputs  # noqa: F401 (a fixture)

from vlmixer.scripts.checkpointing import load_training_state, save_training_state  # noqa: E402
from vlmixer.scripts.pretrain import resume_step, save_checkpoint  # noqa: E402


class Payload:
    """Unpickling it creates `marker`: the proof that a checkpoint file ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator()


def training_state(seed: int = 0) -> dict:
    """
    What pretrain.py checkpoints, in small: a tiny model with tied weights (initialised by `seed`), AdamW in two
    groups, the LR schedule, and a stream chooser, a batch stream and a collator (numpy and torch generators).
    """
    torch.manual_seed(seed)
    model = VLMixerForPreTraining(tiny_config())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=1e-2)  # fmt: skip
    stateful = {"chooser": StreamChooser({"text": 1.0, "tags": 0.5}, 0), "collator.text": SeededCollator(None, seed=0),
                "stream.text": BatchStream(list(range(30)), 4, 0)}  # fmt: skip
    scheduler = get_scheduler("linear", optimizer, 2, 20)
    return dict(model=model, optimizer=optimizer, scheduler=scheduler, stateful=stateful)


def advance(state: dict, steps: int) -> list:
    """Optimizer steps on a stand-in loss, drawing from every generator; returns all it saw."""
    seen = []
    stateful = state["stateful"]
    for _ in range(steps):
        loss = sum(p.square().sum() * (1 + torch.rand(())) for p in state["model"].parameters())
        loss.backward()
        state["optimizer"].step()
        state["scheduler"].step()
        state["optimizer"].zero_grad()
        collator = stateful["collator.text"]
        seen.append((loss.item(), stateful["chooser"].next_stream(), stateful["stream.text"].next_batch(),
                     collator._rng.random(), torch.rand(2, generator=collator._torch_generator).tolist(),
                     random.random(), np.random.random()))  # fmt: skip
    return seen


def plain(value):
    """Nested states as comparable plain values (tensors exactly, with their dtype)."""
    if torch.is_tensor(value):
        return str(value.dtype), value.tolist()
    if isinstance(value, dict):
        return {str(key): plain(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [plain(inner) for inner in value]
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else value


def snapshot(state: dict) -> dict:
    return plain({"model": state["model"].state_dict(), "optimizer": state["optimizer"].state_dict(),
                  "scheduler": state["scheduler"].state_dict(),
                  "stateful": {name: obj.state_dict() for name, obj in state["stateful"].items()},
                  "rng": [random.getstate(), np.random.get_state(legacy=False), torch.get_rng_state()]})  # fmt: skip


@pytest.fixture
def saved(accelerator, tmp_path):
    """A checkpoint after three steps, and the snapshot of the state it holds."""
    state = training_state()
    advance(state, 3)
    save_training_state(tmp_path / "step_3", accelerator, step=3, **state)
    return tmp_path / "step_3", snapshot(state), state


def rewrite_manifest(folder, **changes) -> None:
    manifest = json.loads((folder / CHECKPOINT_MANIFEST).read_text())
    manifest.update(changes)
    (folder / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest))


def refusal(accelerator, folder, seed: int = 1) -> str:
    with pytest.raises(SystemExit) as exit_info:
        load_training_state(folder, accelerator, **training_state(seed))
    return str(exit_info.value.code)


# ---------------------------------------------------------------------------------------------- round trip


def test_round_trip_restores_everything_without_pickle(accelerator, saved, monkeypatch):
    folder, expected, original = saved
    future = advance(original, 3)
    assert {path.suffix for path in folder.iterdir()} == {".safetensors", ".json"}

    def forbidden(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(module, name, forbidden)
    resumed = training_state(seed=1)  # other weights, data positions and random states until loaded
    assert snapshot(resumed) != expected
    assert load_training_state(folder, accelerator, **resumed) == 3
    assert snapshot(resumed) == expected
    tied = resumed["model"]
    assert tied.cls.predictions.decoder.weight is tied.vlmixer.embeddings.word_embeddings.weight
    assert advance(resumed, 3) == future


# ---------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("planted", ["custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin"])
def test_planted_pickle_is_refused_without_running_it(accelerator, saved, tmp_path, planted):
    folder, marker = saved[0], tmp_path / "pwned"
    (folder / planted).write_bytes(pickle.dumps(Payload(marker)))
    message = refusal(accelerator, folder)
    assert "is not a VLMixer checkpoint written by this version" in message and f"({planted})" in message
    assert not marker.exists()


def test_pickle_under_our_own_file_names_is_refused_without_running_it(accelerator, saved, tmp_path):
    folder, marker = saved[0], tmp_path / "pwned"
    (folder / "optimizer.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    assert "optimizer.safetensors" in refusal(accelerator, folder)  # the checksum no longer matches
    from vlmixer.scripts.checkpointing import write_manifest

    write_manifest(folder, 3, 1)  # a forged manifest: the file itself must still be refused
    message = refusal(accelerator, folder)
    assert message.startswith(f"Cannot load {folder / 'optimizer.safetensors'}") and "\n" not in message
    assert not marker.exists()


def test_flipped_byte_and_truncation_are_caught_and_named(accelerator, saved):
    folder = saved[0]
    data = bytearray((folder / "optimizer.safetensors").read_bytes())
    data[-5] ^= 0x01  # inside the last tensor: still a valid safetensors file, silently wrong without a checksum
    (folder / "optimizer.safetensors").write_bytes(bytes(data))
    expected = f"{folder / 'optimizer.safetensors'} does not match its sha256 in the manifest: damaged or changed."
    assert refusal(accelerator, folder) == expected
    with (folder / "model.safetensors").open("r+b") as handle:
        handle.truncate(100)
    assert "model.safetensors has 100 bytes" in refusal(accelerator, folder)


def test_other_world_size_and_missing_manifest_are_refused(accelerator, saved):
    folder = saved[0]
    rewrite_manifest(folder, world_size=2)
    assert "written by 2 processes and this run has 1" in refusal(accelerator, folder)
    (folder / CHECKPOINT_MANIFEST).unlink()
    assert "is not a complete checkpoint" in refusal(accelerator, folder)


# ---------------------------------------------------------------------------------------------- latest


def test_half_written_checkpoint_is_skipped_by_latest(accelerator, tmp_path):
    state = training_state()
    for step in (3, 6, 9):
        advance(state, 3)
        save_checkpoint(accelerator, str(tmp_path), step, state)
    root = tmp_path / "checkpoints"
    assert checkpoint_dirs(tmp_path) == [root / "step_3", root / "step_6", root / "step_9"]
    (root / "step_9" / CHECKPOINT_MANIFEST).unlink()  # the trainer_state.json marker alone does not make it complete
    with (root / "step_6" / "model.safetensors").open("r+b") as handle:
        handle.truncate(100)  # a copy cut short: the manifest is there, a file is not whole
    assert checkpoint_dirs(tmp_path) == [root / "step_3"]
    args = argparse.Namespace(resume_from_checkpoint="latest", output_dir=str(tmp_path))
    assert resume_step(args) == (root / "step_3", 3)


# ---------------------------------------------------------------------------------------------- the script


def test_script_refuses_a_planted_pickle(run_inputs, tmp_path):  # noqa: F811
    output_dir, marker = tmp_path / "run", tmp_path / "pwned"
    command = pretrain_command(run_inputs, output_dir)
    command[command.index("--max_steps") + 1] = "4"
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    checkpoint = output_dir / "checkpoints" / "step_3"
    assert sorted(path.name for path in checkpoint.iterdir()) == [
        CHECKPOINT_MANIFEST, "model.safetensors", "optimizer.json", "optimizer.safetensors", "process_0.json",
        "process_0.safetensors", "scheduler.json", "trainer_state.json",
    ]  # fmt: skip
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl"):
        (checkpoint / name).write_bytes(pickle.dumps(Payload(marker)))
    resumed = subprocess.run([*command, "--resume_from_checkpoint", "latest"], capture_output=True, text=True,
                             timeout=300, check=False)  # fmt: skip
    assert resumed.returncode != 0 and not marker.exists()
    assert resumed.stderr.strip().splitlines()[-1] == (
        f"{checkpoint} is not a VLMixer checkpoint written by this version: it holds pickle files "
        "(custom_checkpoint_0.pkl, random_states_0.pkl); refusing to load them."
    )
