"""Resumable training state without pickle: safetensors for tensors, JSON for everything else, and a manifest.

Accelerate's `save_state` / `load_state` write pickles (`custom_checkpoint_*.pkl`, `random_states_*.pkl`,
`optimizer.bin`) and unpickle them on resume, so a crafted checkpoint folder runs code. A checkpoint folder of this
module holds only

  model.safetensors         the unwrapped model's weights (tied weights stored once, as `safetensors.torch.save_model`)
  optimizer.safetensors     the optimizer's tensors (AdamW moments and step counts)
  optimizer.json            the rest of `optimizer.state_dict()` (param_groups), each tensor a {"__tensor__": key}
  scheduler.json            the LR scheduler's state_dict
  scaler.json               the fp16 GradScaler's state_dict (fp16 runs only)
  trainer_state.json        the step and the Accelerator's micro-step counter
  process_<i>.json          process i's Python and numpy random states and its stateful objects' state_dicts
  process_<i>.safetensors   process i's torch (and CUDA) random states and the tensors of its stateful objects
  checkpoint.json           the manifest, written last: format, version, step, world size, each file's size and sha256

Loading refuses, in one line and before parsing anything, a folder with pickle files or without the manifest, a file
whose size or sha256 is not the manifest's, and a world size other than the run's (the per-process states cannot be
split or merged). A file that passes these checks but cannot be parsed (a forged manifest) is a one-line error naming
it too; `--resume_from_checkpoint latest` does not fall back to an older checkpoint then, because a damaged or changed
file is worth a look before training on.

Every file is written whole or not at all (scripts/atomic.py), and `save_checkpoint` writes a checkpoint folder into
a staging folder of its own and swaps it in under a lock on `checkpoints/`: a kill at any step, or a second run saving
at once, leaves the previous or the new checkpoint whole.
"""

import ctypes
import errno
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import DistributedType
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from vlmixer.processing.streams import CHECKPOINT_MANIFEST

from vlmixer.scripts.atomic import atomic_path, fsync_path
from vlmixer.scripts.atomic import atomic_write_text as atomic_write_text  # pretrain.py's metrics files; one mechanism for all files


try:
    import fcntl
except ImportError:  # Windows: no folder locks
    fcntl = None

FORMAT, VERSION = "vlmixer-training-state", 1
PICKLE_SUFFIXES = (".pkl", ".bin", ".pt", ".pth")
TENSOR = "__tensor__"  # a JSON stand-in for the tensor of that key in the matching .safetensors file


# ---------------------------------------------------------------------------------------------- JSON and tensors


def plain(value):
    """json.dumps hook: numpy scalars and arrays (numpy random states hold them) as Python numbers and lists."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} cannot go into a JSON checkpoint file")


def write_json(path: Path, value) -> None:
    atomic_write_text(path, json.dumps(value, default=plain))


def split_tensors(value, key: str = "") -> tuple[object, dict[str, torch.Tensor]]:
    """`value` with each tensor replaced by {"__tensor__": key}, and those tensors by key: JSON plus safetensors."""
    tensors = {}

    def walk(item, path: str):
        if torch.is_tensor(item):
            tensors[path] = item.detach().cpu().contiguous()
            return {TENSOR: path}
        if isinstance(item, dict):
            return {str(name): walk(inner, f"{path}.{name}") for name, inner in item.items()}
        if isinstance(item, list | tuple):
            return [walk(inner, f"{path}.{index}") for index, inner in enumerate(item)]
        return item

    return walk(value, key), tensors


def join_tensors(value, tensors: dict[str, torch.Tensor]):
    """The inverse of split_tensors (tuples come back as lists, dict keys as strings)."""
    if isinstance(value, dict):
        if set(value) == {TENSOR}:
            return tensors[value[TENSOR]]
        return {name: join_tensors(inner, tensors) for name, inner in value.items()}
    if isinstance(value, list):
        return [join_tensors(inner, tensors) for inner in value]
    return value


def save_split(folder: Path, stem: str, state) -> None:
    structure, tensors = split_tensors(state, stem)
    with atomic_path(folder / f"{stem}.safetensors") as temporary:
        save_file(tensors, temporary)
    write_json(folder / f"{stem}.json", structure)


@contextmanager
def reading(path: Path):
    """A file that passed the manifest's checks but cannot be parsed or applied: one line naming it, no traceback."""
    try:
        yield
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, IndexError, RuntimeError) as error:
        sys.exit(f"Cannot load {path}: {' '.join(str(error).split()) or type(error).__name__}")


def read_json(path: Path):
    with reading(path):
        return json.loads(path.read_text())


def load_split(folder: Path, stem: str):
    with reading(folder / f"{stem}.safetensors"):
        tensors = load_file(folder / f"{stem}.safetensors")
    with reading(folder / f"{stem}.json"):
        return join_tensors(json.loads((folder / f"{stem}.json").read_text()), tensors)


# ---------------------------------------------------------------------------------------------- states


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(legacy=False), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))  # JSON gave lists; random wants its tuples back
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_optimizer(folder: Path, optimizer) -> None:
    state = load_split(folder, "optimizer")
    with reading(folder / "optimizer.json"):
        state["state"] = {int(index): values for index, values in state["state"].items()}  # torch keys them by int
        for saved, current in zip(state["param_groups"], optimizer.state_dict()["param_groups"], strict=True):
            saved.update({key: tuple(saved[key]) for key, value in current.items() if isinstance(value, tuple)})
        optimizer.load_state_dict(state)


def require_supported(accelerator) -> None:
    """FSDP shards and DeepSpeed owns the optimizer state (DeepSpeed saves it with pickle): not covered here."""
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        sys.exit(f"Checkpoints (safetensors + JSON) support one process or DDP, not "
                 f"{accelerator.distributed_type.value}; set --checkpointing_steps above --max_steps to train without "
                 "them.")  # fmt: skip


# ---------------------------------------------------------------------------------------------- save


def save_training_state(folder, accelerator, model, optimizer, scheduler, stateful: dict, step: int) -> None:
    """
    Every process writes its own random and stateful-object states (they differ between processes); the main
    process the model, optimizer, scheduler and, once all are written, the manifest.
    """
    require_supported(accelerator)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    objects = {name: obj.state_dict() for name, obj in stateful.items()}
    save_split(folder, f"process_{accelerator.process_index}", {"rng": rng_state(), "stateful": objects})
    if accelerator.is_main_process:
        with atomic_path(folder / "model.safetensors") as temporary:
            save_model(accelerator.unwrap_model(model), str(temporary))
        save_split(folder, "optimizer", optimizer.state_dict())
        write_json(folder / "scheduler.json", scheduler.state_dict())
        if accelerator.scaler is not None:
            write_json(folder / "scaler.json", accelerator.scaler.state_dict())
        write_json(folder / "trainer_state.json", {"step": step, "accelerator_step": accelerator.step})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_manifest(folder, step, accelerator.num_processes)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()  # by blocks, not hashlib.file_digest: Python 3.10 is still supported
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, step: int, world_size: int) -> None:
    files = {path.name: {"size": path.stat().st_size, "sha256": sha256(path)}
             for path in sorted(folder.iterdir()) if path.is_file() and path.name != CHECKPOINT_MANIFEST}  # fmt: skip
    manifest = {"format": FORMAT, "version": VERSION, "step": step, "world_size": world_size, "files": files}
    write_json(folder / CHECKPOINT_MANIFEST, manifest)


# ---------------------------------------------------------------------------------------------- verify and load


def read_manifest(folder) -> dict:
    """The manifest of a checkpoint folder, after refusing one that holds pickles or was not written by this module."""
    folder = Path(folder)
    pickles = sorted(path.name for path in folder.glob("*") if path.suffix in PICKLE_SUFFIXES)
    if pickles:
        sys.exit(f"{folder} is not a VLMixer checkpoint written by this version: it holds pickle files "
                 f"({', '.join(pickles)}); refusing to load them.")  # fmt: skip
    if not (folder / CHECKPOINT_MANIFEST).is_file():
        sys.exit(f"{folder} is not a complete checkpoint (no {CHECKPOINT_MANIFEST}): cut short, or not written by "
                 "this version.")  # fmt: skip
    manifest = read_json(folder / CHECKPOINT_MANIFEST)
    if not well_formed(manifest):
        sys.exit(f"{folder / CHECKPOINT_MANIFEST} is not a {FORMAT} version {VERSION} manifest; refusing the "
                 "checkpoint.")  # fmt: skip
    return manifest


def well_formed(manifest) -> bool:
    """Of this format and version, with an integer step and a {name: {"size": ..., "sha256": ...}} file list."""
    if not isinstance(manifest, dict) or (manifest.get("format"), manifest.get("version")) != (FORMAT, VERSION):
        return False
    files = manifest.get("files")
    entries_ok = isinstance(files, dict) and all(isinstance(entry, dict) for entry in files.values())
    return entries_ok and isinstance(manifest.get("step"), int)


def checkpoint_step(folder) -> int:
    return read_manifest(folder)["step"]


def expected_files(world_size: int) -> list[str]:
    names = ["model.safetensors", "optimizer.safetensors", "optimizer.json", "scheduler.json", "trainer_state.json"]
    return names + [f"process_{index}.{suffix}" for index in range(world_size) for suffix in ("json", "safetensors")]


def verify_checkpoint(folder, world_size: int) -> dict:
    """Every check that needs no parsing: world size, each file present with the manifest's size and sha256."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest.get("world_size") != world_size:
        sys.exit(f"{folder} was written by {manifest.get('world_size')} processes and this run has {world_size}: "
                 "the per-process random and data states cannot be split or merged; resume with as many.")  # fmt: skip
    files = manifest["files"]
    unlisted = [name for name in expected_files(world_size) if name not in files]
    if unlisted:
        sys.exit(f"{folder / CHECKPOINT_MANIFEST} does not list {', '.join(unlisted)}; refusing the checkpoint.")
    for name, entry in files.items():
        path = folder / name
        if Path(name).name != name or not path.is_file():
            sys.exit(f"{path} is missing or not a plain file name (the manifest lists it); refusing the checkpoint.")
        if path.stat().st_size != entry.get("size"):
            sys.exit(f"{path} has {path.stat().st_size} bytes, the manifest {entry.get('size')}: damaged or changed.")
        if sha256(path) != entry.get("sha256"):
            sys.exit(f"{path} does not match its sha256 in the manifest: damaged or changed.")
    return manifest


def load_training_state(folder, accelerator, model, optimizer, scheduler, stateful: dict) -> int:
    """Restores what save_training_state wrote, after verify_checkpoint; returns the checkpoint's step."""
    require_supported(accelerator)
    folder = Path(folder)
    with folder_lock(folder.parent, shared=True) if folder.parent.is_dir() else nullcontext():  # not mid-swap
        return load_verified(folder, accelerator, model, optimizer, scheduler, stateful)


def load_verified(folder: Path, accelerator, model, optimizer, scheduler, stateful: dict) -> int:
    manifest = verify_checkpoint(folder, accelerator.num_processes)
    with reading(folder / "model.safetensors"):
        load_model(accelerator.unwrap_model(model), folder / "model.safetensors", strict=True)
    load_optimizer(folder, optimizer)
    with reading(folder / "scheduler.json"):
        scheduler.load_state_dict(read_json(folder / "scheduler.json"))
    if accelerator.scaler is not None and "scaler.json" in manifest["files"]:
        with reading(folder / "scaler.json"):
            accelerator.scaler.load_state_dict(read_json(folder / "scaler.json"))
    with reading(folder / "trainer_state.json"):
        accelerator.step = read_json(folder / "trainer_state.json")["accelerator_step"]
    stem = f"process_{accelerator.process_index}"
    state = load_split(folder, stem)
    with reading(folder / f"{stem}.json"):
        if set(state["stateful"]) != set(stateful):
            sys.exit(f"{folder / stem}.json holds the states of {sorted(state['stateful'])}, this run has "
                     f"{sorted(stateful)}: resume with the same --stream_weights.")  # fmt: skip
        for name, obj in stateful.items():
            obj.load_state_dict(state["stateful"][name])
        set_rng_state(state["rng"])  # last, so that nothing above draws from the restored generators
    return manifest["step"]


# ---------------------------------------------------------------------------------------------- atomic writes


def exchange_paths(first: Path, second: Path) -> bool:
    """Swaps two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where the system or the file system
    cannot; an OSError for any other failure (a path gone), never a fall-back that would move the target aside."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


def replace_directory(new, target) -> None:
    """
    Puts the complete folder `new` at `target`, replacing any folder there: one atomic swap where the system has
    one (the old folder then removed), so a reader or a kill sees the old folder or the new one, whole. Elsewhere the
    old folder is moved aside first: a kill between the two renames leaves it whole at `.<name>.previous`.
    """
    new, target = Path(new), Path(target)
    if not new.is_dir():
        raise FileNotFoundError(f"{new} is not a folder: nothing to put at {target}")
    if not target.exists():
        os.replace(new, target)
    elif exchange_paths(new, target):
        fsync_path(target.parent, directory=True)
        shutil.rmtree(new)  # it now holds the old folder
    else:
        aside = target.with_name(f".{target.name}.previous")
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(target, aside)
        os.replace(new, target)
        fsync_path(target.parent, directory=True)
        shutil.rmtree(aside)
        return
    fsync_path(target.parent, directory=True)


# ---------------------------------------------------------------------------------------------- whole checkpoints


STAGING_PREFIX = ".partial_step_"  # checkpoints/.partial_step_<N>.<save id>: a save in progress (or killed)


@contextmanager
def folder_lock(folder, shared: bool = False):
    """An flock on the folder itself (no lock file left behind; none on Windows): exclusive for a save into it, shared
    for a load from it, so that a load never reads a checkpoint while another run swaps it."""
    if fcntl is None:
        yield
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


@contextmanager
def staged_directory(output_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """
    Yields an empty temporary folder beside `output_dir`; when the block ends without error it becomes `output_dir`
    (an existing one is replaced only with `overwrite`), otherwise it is deleted. Readers never see half a folder.
    """
    output = Path(output_dir)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass overwrite=True (--overwrite) to replace it.")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent))
    try:
        yield staging
        replace_directory(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_id(accelerator) -> str:
    """A name for this save that every process of the run shares (the main process draws it)."""
    drawn = [uuid.uuid4().hex[:12]]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(drawn, from_process=0)
    return drawn[0]


def remove_leftovers(root: Path) -> None:
    """What killed saves left in `checkpoints/` (their staging folders, a folder moved aside): no save is running,
    since the caller holds the folder's lock."""
    for path in root.iterdir():
        if path.name.startswith(STAGING_PREFIX) or (path.name.startswith(".step_") and path.name.endswith(".previous")):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def save_checkpoint(checkpoints_dir, accelerator, model, optimizer, scheduler, stateful: dict, step: int) -> Path:
    """
    `checkpoints_dir/step_<step>`, whole or not at all: the training state goes into a staging folder of this save
    alone (`.partial_step_<step>.<id>`), which then replaces `step_<step>` in one atomic swap. The main process holds
    an exclusive lock on `checkpoints_dir` from before the staging folder exists until the swap, so that two runs saving
    into one folder at once (two resumes of one run, say) take turns, and each save first removes what killed saves
    left. A kill at any point leaves the previous `step_<step>` (or none) or the new one, each with its manifest;
    `--resume_from_checkpoint latest` (processing.streams.checkpoint_dirs) sees only whole ones.
    """
    root = Path(checkpoints_dir)
    final = root / f"step_{step}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
    staging = root / f"{STAGING_PREFIX}{step}.{save_id(accelerator)}"
    with folder_lock(root) if accelerator.is_main_process else nullcontext():
        if accelerator.is_main_process:
            remove_leftovers(root)
        accelerator.wait_for_everyone()  # the other processes write into the staging folder only once we hold the lock
        save_training_state(staging, accelerator, model, optimizer, scheduler, stateful, step)
        if accelerator.is_main_process:
            replace_directory(staging, final)
    accelerator.wait_for_everyone()
    return final


# ---------------------------------------------------------------------------------------------- Trainer checkpoints


class TrainerStateWithoutPickle:
    """
    A `Trainer` mixin (put before `Trainer`): what resuming needs, in the Trainer's checkpoint folders, as this
    module's safetensors + JSON files instead of `torch.save` pickles (optimizer.pt, scheduler.pt, rng_state*.pth),
    which `torch.load(weights_only=True)` would still unpickle from a folder someone handed over. DeepSpeed and FSDP
    keep their own sharded formats (the Trainer's). A folder with the Trainer's pickled optimizer is refused on resume.
    """

    def _shards_itself(self) -> bool:
        return self.is_deepspeed_enabled or self.is_fsdp_enabled

    def _rng_stem(self) -> str:
        return "rng_state" if self.args.world_size <= 1 else f"rng_state_{self.args.process_index}"

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if self._shards_itself():
            return super()._save_optimizer_and_scheduler(output_dir)
        if self.args.should_save:
            save_split(Path(output_dir), "optimizer", self.optimizer.state_dict())
            write_json(Path(output_dir) / "scheduler.json", self.lr_scheduler.state_dict())

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None or self._shards_itself():
            return super()._load_optimizer_and_scheduler(checkpoint)
        folder = Path(checkpoint)
        if not (folder / "optimizer.safetensors").is_file():
            pickled = [path.name for path in folder.iterdir() if path.suffix in PICKLE_SUFFIXES]
            sys.exit(f"Cannot resume from {folder}: it holds no optimizer.safetensors"
                     + (f" (pickled state {', '.join(sorted(pickled))} is not loaded)." if pickled else "."))  # fmt: skip
        load_optimizer(folder, self.optimizer)
        self.lr_scheduler.load_state_dict(read_json(folder / "scheduler.json"))

    def _save_rng_state(self, output_dir: str) -> None:
        os.makedirs(output_dir, exist_ok=True)  # a process may get here before the main one made the folder
        save_split(Path(output_dir), self._rng_stem(), rng_state())

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if checkpoint is not None and (Path(checkpoint) / f"{self._rng_stem()}.json").is_file():
            set_rng_state(load_split(Path(checkpoint), self._rng_stem()))

    def _save_scaler(self, output_dir: str) -> None:
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None and self.args.should_save:
            write_json(Path(output_dir) / "scaler.json", scaler.state_dict())

    def _load_scaler(self, checkpoint: str | None) -> None:
        scaler = getattr(self.accelerator, "scaler", None)
        if checkpoint is not None and scaler is not None and (Path(checkpoint) / "scaler.json").is_file():
            scaler.load_state_dict(read_json(Path(checkpoint) / "scaler.json"))
