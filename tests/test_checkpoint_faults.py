"""Pre-training checkpoint saves under faults (issue 13): a save killed at every file operation, and two runs saving
into one checkpoint folder at once, always leave `--resume_from_checkpoint latest` a whole checkpoint: the previous
one or the new one, never a half one (scripts/checkpointing.save_checkpoint)."""

import argparse
import os
import shutil

import pytest
from accelerate import Accelerator

from vlmixer.processing.streams import CHECKPOINT_MANIFEST, checkpoint_dirs

from .helpers.faults import killed_at
from .test_checkpointing import advance, snapshot, training_state

from vlmixer.scripts import checkpointing  # noqa: E402
from vlmixer.scripts.pretrain import resume_step  # noqa: E402


pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
FILE_OPERATIONS = ("open", "close", "fsync", "replace", "rename", "chmod", "unlink", "rmdir", "mkdir", "scandir")


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator()


@pytest.fixture(scope="module")
def states():
    """Three training states after different steps, and the snapshot each holds."""
    found = {}
    for name, steps in (("A", 2), ("B", 3), ("C", 4)):
        state = training_state(seed=steps)
        advance(state, steps)
        found[name] = (state, without_rng(snapshot(state)))
    return found


def without_rng(saved: dict) -> dict:
    """The global random states are the process's at save time, not the state's (test_checkpointing checks them)."""
    return {key: value for key, value in saved.items() if key != "rng"}


def save_killed_at(accelerator, root, state: dict, step: int, kill_at: int) -> bool:
    """save_checkpoint in a child that dies at its `kill_at`-th file operation; whether it died before finishing."""
    return killed_at(kill_at, lambda: checkpointing.save_checkpoint(root, accelerator, step=step, **state),
                     FILE_OPERATIONS, ((checkpointing, "exchange_paths"),))  # fmt: skip


def resumed(accelerator, output_dir, states) -> tuple[int, str]:
    """What `--resume_from_checkpoint latest` finds: its step and which state it restores (loaded in full)."""
    path, step = resume_step(argparse.Namespace(resume_from_checkpoint="latest", output_dir=str(output_dir)))
    fresh = training_state(seed=99)
    assert checkpointing.load_training_state(path, accelerator, **fresh) == step
    restored = without_rng(snapshot(fresh))
    names = [name for name, (_, saved) in states.items() if saved["model"] == restored["model"]]
    assert len(names) == 1, "the checkpoint restores no saved state"
    assert restored == states[names[0]][1], f"{path} mixes states"
    return step, names[0]


@pytest.mark.parametrize("same_step", [False, True], ids=["new-step", "same-step-again"])
def test_a_checkpoint_save_killed_at_any_step_leaves_the_previous_or_the_new_one_whole(tmp_path, accelerator, states,
                                                                                        same_step):  # fmt: skip
    """A: step_3 is there; B is saved as step_6 (new-step) or as step_3 again (a run resumed from an older
    checkpoint): killed anywhere, `latest` restores A or B whole; the next save removes what the kill left."""
    base = tmp_path / "base"
    checkpointing.save_checkpoint(base / "checkpoints", accelerator, step=3, **states["A"][0])
    new_step = 3 if same_step else 6
    outcomes = set()
    for kill_at in range(1, 400):
        output_dir = tmp_path / f"kill_{kill_at}"
        shutil.copytree(base, output_dir)
        root = output_dir / "checkpoints"
        if not save_killed_at(accelerator, root, states["B"][0], new_step, kill_at):
            break
        found = resumed(accelerator, output_dir, states)
        assert found in ((3, "A"), (new_step, "B")), f"killed at file operation {kill_at}: {found}"
        outcomes.add(found)
        checkpointing.save_checkpoint(root, accelerator, step=9, **states["C"][0])  # completes, cleans up
        assert resumed(accelerator, output_dir, states) == (9, "C")
        whole = {path.name for path in checkpoint_dirs(output_dir)}
        assert sorted(os.listdir(root)) == sorted(whole) and {"step_3", "step_9"} <= whole, f"leftovers ({kill_at})"
        shutil.rmtree(output_dir)
    else:
        raise AssertionError("the save never finished")
    assert kill_at > 20 and resumed(accelerator, output_dir, states) == (new_step, "B")
    assert outcomes == {(3, "A"), (new_step, "B")}  # both sides of the swap were hit
    assert sorted(os.listdir(output_dir / "checkpoints")) == sorted({"step_3", f"step_{new_step}"})


def test_two_runs_saving_one_checkpoint_at_once_never_corrupt_it(tmp_path, accelerator, states):
    """Two writers save step_6 (states A and B) over and over while `latest` is resolved and verified: every look
    finds a whole checkpoint of one writer (all files of A, or all of B), and nothing is left beside it."""
    root = tmp_path / "checkpoints"
    checkpointing.save_checkpoint(root, accelerator, step=6, **states["C"][0])
    writers = []
    for name in ("A", "B"):
        pid = os.fork()
        if pid == 0:
            try:
                for _ in range(12):
                    checkpointing.save_checkpoint(root, accelerator, step=6, **states[name][0])
                os._exit(0)
            except BaseException:  # noqa: BLE001
                os._exit(1)
        writers.append(pid)
    seen, running = set(), set(writers)
    while running:
        with checkpointing.folder_lock(root, shared=True):  # as load_training_state reads
            (latest,) = checkpoint_dirs(tmp_path)
            manifest = checkpointing.verify_checkpoint(latest, 1)  # every file as its manifest lists it
        seen.add(manifest["files"]["model.safetensors"]["sha256"])
        for pid in list(running):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                assert os.waitstatus_to_exitcode(status) == 0, "a writer failed"
                running.discard(pid)
    assert sorted(os.listdir(root)) == ["step_6"]
    assert resumed(accelerator, tmp_path, states)[1] in ("A", "B")
    assert len(seen) >= 2
    assert (root / "step_6" / CHECKPOINT_MANIFEST).is_file()
