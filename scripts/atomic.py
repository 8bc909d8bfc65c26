"""Files written whole or not at all (issue 13): every file the scripts write goes through here.

A file is written under a temporary name beside its final name (same folder, so the rename never crosses file
systems), flushed and fsynced, then renamed over the final name with `os.replace` (one atomic step), and the folder
fsynced so that the rename survives a power loss. A kill, a full disk or an exception at any point leaves the old file
(or none) at the final name, never a half-written one; the temporary file is removed on errors (after a kill it stays
as `.<name>.<random>.tmp`, never at the final name). Temporary names are unique (`mkstemp`), so two writers of one
file do not write into one temporary file: the last rename wins, whole.

Why our own: transformers and huggingface_hub write their own files (save_pretrained, downloads) safely but offer no
public helper for a caller's files (huggingface_hub's `_sandbox_cache._atomic_write` is private, JSON-only and does
not fsync), and safetensors / matplotlib write to the path they are given.

  atomic_write_text(path, text)        a whole text file (UTF-8 unless told)
  atomic_write_bytes(path, data)
  with atomic_open(path, "w") as f:    a handle for writers that take one (csv, json.dump)
  with atomic_path(path) as tmp:       a temporary path for writers that take a file name (safetensors save_file,
      save_file(tensors, tmp)          savefig(tmp, format=...)); renamed over `path` when the block ends normally
"""

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file; mkstemp makes it 0600


def fsync_path(path, directory: bool = False) -> None:
    """Flushes a file (or, on POSIX, a folder's entries: its renames) to disk."""
    if directory and os.name != "posix":
        return  # Windows cannot open a folder to fsync it
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def atomic_path(path):
    """A temporary path beside `path` to write; when the block ends normally it is fsynced and renamed over `path`,
    when it raises it is removed and `path` is left as it was."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.close(descriptor)
        os.chmod(temporary, FILE_MODE)
        yield Path(temporary)
        fsync_path(temporary)
        os.replace(temporary, path)
        fsync_path(path.parent, directory=True)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


@contextmanager
def atomic_open(path, mode: str = "w", **kwargs):
    """`open(path, mode)` written whole or not at all (mode "w" or "wb"; text defaults to UTF-8)."""
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_open writes a new file (mode 'w' or 'wb'), not mode {mode!r}")
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as temporary, open(temporary, mode, **kwargs) as handle:
        yield handle


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> None:
    with atomic_open(path, "w", encoding=encoding, newline="") as handle:
        handle.write(text)


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


__all__ = ["atomic_open", "atomic_path", "atomic_write_bytes", "atomic_write_text", "fsync_path"]
