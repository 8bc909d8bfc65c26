"""Every file the scripts write is written whole or not at all (issue 13, scripts/atomic.py): a write cut short by a
full disk (a forked child under RLIMIT_FSIZE) or a kill at any file operation leaves the old file (or none) at the
final name, and no temporary file after an error."""

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

from .helpers.faults import killed_at

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or os.name != "posix", reason="needs fork and rlimits")

OLD = b'{"old": "whole"}\n'
LIMIT = 4096  # bytes a child may write per file: every new file below is larger


def on_a_full_disk(write) -> int:
    """Runs `write()` in a forked child whose files cannot grow past LIMIT bytes (EFBIG, as on a full disk); its exit
    status: 0 it finished, 3 it raised (as it should), 1 it failed in another way."""
    pid = os.fork()
    if pid == 0:
        try:
            import resource
            import signal

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error from write(), not a killed process
            resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
            write()
            os._exit(0)
        except BaseException:  # noqa: BLE001  (OSError, SafetensorError, ...: the write was refused)
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def big_figures() -> dict:
    return {"rows": ["x" * 100] * 200}


def write_report(path):
    from vlmixer.scripts.figures import report

    return lambda: report(big_figures(), str(path))


def write_json(path):
    from vlmixer.scripts.checkpointing import write_json as write

    return lambda: write(path, big_figures())


def write_eval_results(path):
    from vlmixer.scripts.evaluate_zero_shot import RECORDED_FIGURES, write_eval_results as write

    return lambda: write(path.parent, {name: big_figures() for name in RECORDED_FIGURES})


def write_heldout(path):
    from vlmixer.scripts.evaluate_zero_shot import write_heldout as write

    rows = 100
    return lambda: write(path.parent, np.ones((rows, 64)), np.arange(rows), np.arange(rows), {"image_size": 112})


def write_cache(path):
    from vlmixer.scripts.evaluate_zero_shot import cached

    return lambda: cached(path, lambda: {"features": np.ones((100, 64), dtype=np.float32)})


WRITERS = {  # writer -> (the file it writes, whether it keeps an existing file: caches are written only when missing)
    "figures.report": (write_report, "report.json", True),
    "checkpointing.write_json": (write_json, "scheduler.json", True),
    "evaluate_zero_shot.write_eval_results": (write_eval_results, "eval_results.json", True),
    "evaluate_zero_shot.write_heldout": (write_heldout, "heldout.safetensors", True),
    "evaluate_zero_shot.cached": (write_cache, "features.safetensors", False),
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_a_write_cut_short_leaves_the_old_file_whole_and_no_leftovers(tmp_path, name):
    make, file_name, replaces = WRITERS[name]
    path = tmp_path / file_name
    if replaces:
        path.write_bytes(OLD)
    assert on_a_full_disk(make(path)) == 3, "the write should have been cut short"
    assert sorted(os.listdir(tmp_path)) == ([file_name] if replaces else [])  # no temporary or partial file
    if replaces:
        assert path.read_bytes() == OLD
    make(path)()  # with room, the same write completes
    assert sorted(os.listdir(tmp_path)) == [file_name] and path.read_bytes() != OLD


def test_training_arguments_json_replaces_the_pickle_whole(tmp_path):
    """finetuning.json_training_arguments: the pickle goes only once its JSON stand-in is written whole."""
    from vlmixer.scripts.finetuning import json_training_arguments

    (tmp_path / "training_args.bin").write_bytes(b"pickle")
    arguments = SimpleNamespace(to_json_string=lambda: json.dumps(big_figures()))
    assert on_a_full_disk(lambda: json_training_arguments(tmp_path, arguments)) == 3
    assert sorted(os.listdir(tmp_path)) == ["training_args.bin"]
    json_training_arguments(tmp_path, arguments)
    assert sorted(os.listdir(tmp_path)) == ["training_args.json"]
    assert json.loads((tmp_path / "training_args.json").read_text()) == big_figures()


def test_a_write_killed_at_any_file_operation_leaves_the_old_or_the_new_file(tmp_path):
    from vlmixer.scripts import atomic

    new = json.dumps(big_figures())
    outcomes = set()
    for step in range(1, 50):
        path = tmp_path / f"{step}" / "report.json"
        path.parent.mkdir()
        path.write_bytes(OLD)
        died = killed_at(step, lambda: atomic.atomic_write_text(path, new),
                         ("open", "close", "fsync", "replace", "chmod", "unlink", "write"))  # fmt: skip
        content = path.read_text()
        assert content in (OLD.decode(), new), f"killed at step {step}: a half file"
        outcomes.add(content)
        if not died:
            break
    else:
        raise AssertionError("the write never finished")
    assert outcomes == {OLD.decode(), new} and step > 4
