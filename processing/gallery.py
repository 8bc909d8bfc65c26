"""PatchGallery: per-concept image patch features for cross-modal CutMix, memory-mapped, sampled in O(1) per draw.

A gallery directory holds two files and no pickle:

- `gallery.safetensors`: `features` (N, D) float16 (or float32), `boxes` (N, 4) float32 as normalised x1, y1, x2, y2,
  `image_ids` (N,) int64, `scores` (N,) float32, `concept_offsets` (C + 1,) int64 and optionally `thumbnails`
  (N, t, t, 3) uint8. Rows are grouped by concept: concept c owns rows offsets[c]:offsets[c + 1].
- `gallery.json`: format_version, backbone, feature_dim, dtype, concepts (in offset order), counts, num_rows,
  thumbnail_size, save_id, weights_sha256 (the sha256 of gallery.safetensors) and, when known, `preprocessing`: how
  the backbone's input crops were made (crop size, resizing, normalisation), which every later feature of the same
  model must repeat. Its save_id must match the one in the safetensors metadata, so two files from different saves
  never open as one gallery.

Saving is atomic and serialised (`write_gallery`): both files are written whole under temporary names, and one rename
of gallery.json commits the save; whatever kills it, the folder holds the old gallery or the new one, whole. Loading
checks the sha256 (`PatchGallery.load(verify=...)`: by default for files up to 256 MiB, always with verify=True), so
a flipped bit is refused rather than trained on.

Self-contained (stdlib, numpy, torch, safetensors) so that it can ship as Hub remote code.
"""

import contextlib
import hashlib
import json
import math
import os
import re
import struct
import time
import uuid

import numpy as np
import torch
from safetensors import SafetensorError, safe_open


try:
    import fcntl
except ImportError:  # Windows: saves are not serialised there
    fcntl = None

GALLERY_WEIGHTS_NAME = "gallery.safetensors"
GALLERY_CONFIG_NAME = "gallery.json"
FORMAT_VERSION = 1

# Little-endian on every host, as safetensors stores them.
SAFETENSORS_DTYPES = {"F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "I64": np.dtype("<i8"), "U8": np.dtype("u1")}
SAFETENSORS_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}
FEATURE_DTYPES = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}
STORED_DTYPES = {
    "concept_offsets": np.dtype("<i8"),
    "image_ids": np.dtype("<i8"),
    "boxes": np.dtype("<f4"),
    "scores": np.dtype("<f4"),
    "thumbnails": np.dtype("u1"),
}
# Widest items first, so that every tensor starts aligned to its item size (the header is padded to 8 bytes).
TENSOR_ORDER = ("concept_offsets", "image_ids", "boxes", "scores", "features", "thumbnails")
REQUIRED_TENSORS = TENSOR_ORDER[:-1]
VERIFY_LIMIT_BYTES = 256 * 2**20  # `load` checks the sha256 of galleries up to this size unless told otherwise
VERIFY_CHUNK_ROWS = 65_536
SAVE_ID = re.compile(r"[0-9a-f]{32}")
# A concurrent save can move the weights between reading gallery.json and opening them: a load reads again for up to
# this long (a bound in time, not in attempts: a loaded machine ran 5 attempts out while two writers saved)
LOAD_RETRY_SECONDS = 2.0


class GalleryError(ValueError):
    """A gallery, or rows for one, that cannot be used: malformed, missing, corrupt, empty or from another backbone."""


# ---------------------------------------------------------------------------------------------- row checks


def as_numpy(array) -> np.ndarray:
    """A numpy array from an array-like or a torch tensor (any device; floating tensors come as float32)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu()
        return (array.float() if array.is_floating_point() else array).numpy()  # numpy has no bfloat16
    return np.asarray(array)


def checked_features(features, feature_dim: int, dtype: np.dtype, where: str) -> np.ndarray:
    """(N, feature_dim) finite features as `dtype`."""
    features = as_numpy(features)
    if features.ndim != 2 or features.shape[1] != feature_dim:
        raise GalleryError(f"{where}: expected features of shape (N, {feature_dim}), got {features.shape}.")
    if not np.isfinite(features).all():
        raise GalleryError(f"{where}: features contain NaN or infinite values.")
    with np.errstate(over="ignore"):  # overflow is reported just below, as an error
        stored = features.astype(dtype)
    if not np.isfinite(stored).all():
        raise GalleryError(f"{where}: features exceed the {dtype.name} range (|x| <= {np.finfo(dtype).max}).")
    return stored


def checked_boxes(boxes, rows: int, where: str) -> np.ndarray:
    """(rows, 4) float32 boxes x1, y1, x2, y2 in [0, 1] with x1 <= x2 and y1 <= y2."""
    boxes = as_numpy(boxes).astype(np.float32)
    if boxes.shape != (rows, 4):
        raise GalleryError(f"{where}: expected boxes of shape ({rows}, 4) for {rows} feature rows, got {boxes.shape}.")
    if not ((boxes >= 0) & (boxes <= 1)).all():  # NaN fails both comparisons
        raise GalleryError(f"{where}: boxes must be normalised x1, y1, x2, y2 in [0, 1].")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise GalleryError(f"{where}: a box has x2 < x1 or y2 < y1.")
    return boxes


def checked_column(values, rows: int, dtype: np.dtype, name: str, where: str) -> np.ndarray:
    """(rows,) values as `dtype`: ids must come as integers (not silently truncated floats), scores must be finite."""
    values = as_numpy(values)
    if values.shape != (rows,):
        raise GalleryError(f"{where}: expected {rows} {name} for {rows} feature rows, got shape {values.shape}.")
    if dtype.kind == "i" and rows and values.dtype.kind not in "iu":
        raise GalleryError(f"{where}: {name} must be integers, got {values.dtype}.")
    if dtype.kind == "f" and not np.isfinite(values).all():
        raise GalleryError(f"{where}: {name} contain NaN or infinite values.")
    return values.astype(dtype)


def checked_thumbnails(thumbnails, rows: int, size: int | None, where: str) -> np.ndarray:
    """(rows, size, size, 3) uint8 thumbnails; size None accepts any square size."""
    thumbnails = as_numpy(thumbnails)
    side = size if size is not None else (thumbnails.shape[1] if thumbnails.ndim == 4 else "t")
    if thumbnails.dtype != np.uint8 or thumbnails.shape != (rows, side, side, 3):
        raise GalleryError(
            f"{where}: expected uint8 thumbnails of shape ({rows}, {side}, {side}, 3), "
            f"got {thumbnails.dtype} {thumbnails.shape}."
        )
    return thumbnails


# ---------------------------------------------------------------------------------------------- writing


def gallery_config(backbone, feature_dim, dtype, concepts, offsets, thumbnail_size, preprocessing=None) -> dict:
    """The contents of gallery.json, with a fresh save_id."""
    counts = np.diff(offsets)
    return {
        **({"preprocessing": preprocessing} if preprocessing is not None else {}),
        "format_version": FORMAT_VERSION,
        "backbone": backbone,
        "feature_dim": int(feature_dim),
        "dtype": np.dtype(dtype).name,
        "concepts": list(concepts),
        "counts": {concept: int(count) for concept, count in zip(concepts, counts)},
        "num_rows": int(offsets[-1]),
        "thumbnail_size": thumbnail_size,
        "save_id": uuid.uuid4().hex,
    }


def write_safetensors(handle, tensors: dict[str, list[np.ndarray]], metadata: dict[str, str]) -> None:
    """
    Writes `tensors` in the safetensors layout, each given as row chunks written one after the other, so that a
    builder's many small adds are never concatenated in memory.
    """
    # Not safetensors.numpy.save_file: it takes each tensor as one array, so a builder's chunks would first be
    # concatenated, a second copy of the whole gallery (200k x 512 float16 rows: peak 784 MiB instead of 583 MiB, and
    # 2.05 s instead of 0.62 s); writing through a handle also lets the sha256 be taken while writing.
    header, end = {"__metadata__": metadata}, 0
    for name, chunks in tensors.items():
        dtype, row_shape = chunks[0].dtype, chunks[0].shape[1:]
        shape = [sum(len(chunk) for chunk in chunks), *row_shape]
        size = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": SAFETENSORS_NAMES[dtype], "shape": shape, "data_offsets": [end, end + size]}
        end += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    handle.write(struct.pack("<Q", len(encoded)))
    handle.write(encoded)
    for chunks in tensors.values():
        for chunk in chunks:
            handle.write(np.ascontiguousarray(chunk).reshape(-1).view(np.uint8))


def write_synced(path: str, write) -> None:
    """Creates `path` (never over an existing file), lets `write(handle)` fill it, and flushes it to disk."""
    with open(path, "xb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())


def sync_directory(directory: str) -> None:
    """Makes the renames in `directory` durable (Windows cannot open a directory to fsync it)."""
    if os.name == "posix":
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


class HashingWriter:
    """A file handle's `write` that also feeds a sha256 of everything written."""

    def __init__(self, handle):
        self.handle, self.sha256 = handle, hashlib.sha256()

    def write(self, data) -> int:
        self.sha256.update(data)
        return self.handle.write(data)


def staged_weights_name(save_id: str) -> str:
    """Where a save writes its weights before they are renamed to gallery.safetensors."""
    return f".{GALLERY_WEIGHTS_NAME}.{save_id}.tmp"


@contextlib.contextmanager
def save_lock(directory: str):
    """
    An exclusive `flock` on the gallery folder itself for the length of one save, so that saves to one folder from
    several threads or processes run one after the other (no lock file is left behind; none on Windows).
    """
    if fcntl is None:
        yield
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def committed_save_id(directory: str) -> str | None:
    """The save_id gallery.json names, if it is readable and well-formed."""
    try:
        with open(os.path.join(directory, GALLERY_CONFIG_NAME), "rb") as handle:
            save_id = json.load(handle).get("save_id")
    except (OSError, ValueError, AttributeError):
        return None
    return save_id if isinstance(save_id, str) and SAVE_ID.fullmatch(save_id) else None


def finish_interrupted_save(directory: str) -> None:
    """
    Under the save lock: completes a save killed after its commit (gallery.json renamed, the weights still under
    their temporary name) and removes the temporary files of saves killed before it.
    """
    save_id = committed_save_id(directory)
    if save_id is not None and os.path.exists(os.path.join(directory, staged_weights_name(save_id))):
        os.replace(os.path.join(directory, staged_weights_name(save_id)), os.path.join(directory, GALLERY_WEIGHTS_NAME))
    for name in os.listdir(directory):
        if name.startswith((f".{GALLERY_WEIGHTS_NAME}.", f".{GALLERY_CONFIG_NAME}.")) and name.endswith(".tmp"):
            os.remove(os.path.join(directory, name))


def write_gallery(directory, config: dict, tensors: dict[str, list[np.ndarray]]) -> None:
    """
    Writes gallery.safetensors and gallery.json into `directory` so that, whatever kills the save, the folder holds
    either the previous gallery or the new one, whole:

    1. under an exclusive lock on the folder (concurrent saves run one after the other), a save an earlier kill
       interrupted is completed or its temporary files removed;
    2. the weights and the JSON (which records the weights' sha256) are written and fsynced under temporary names;
    3. gallery.json is renamed into place: the commit. From here on `PatchGallery.load` opens the new gallery, from
       the weights' temporary name (found by the save_id) until
    4. the weights are renamed to gallery.safetensors.

    A first save into a folder renames the weights first, so that a kill leaves no gallery.json (no gallery) rather
    than a JSON whose weights have a temporary name. An exception (not a kill) removes the uncommitted files.
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    dtypes = {**STORED_DTYPES, "features": FEATURE_DTYPES[config["dtype"]]}
    ordered = {
        name: [chunk.astype(dtypes[name], copy=False) for chunk in tensors[name]]
        for name in TENSOR_ORDER
        if name in tensors
    }
    save_id = config["save_id"]
    weights_path = os.path.join(directory, GALLERY_WEIGHTS_NAME)
    config_path = os.path.join(directory, GALLERY_CONFIG_NAME)
    weights_tmp = os.path.join(directory, staged_weights_name(save_id))
    config_tmp = os.path.join(directory, f".{GALLERY_CONFIG_NAME}.{save_id}.tmp")
    digest = {}

    def write_weights(handle) -> None:
        hashing = HashingWriter(handle)
        write_safetensors(hashing, ordered, {"save_id": save_id})
        digest["weights_sha256"] = hashing.sha256.hexdigest()

    with save_lock(directory):
        finish_interrupted_save(directory)
        committed = False
        try:
            write_synced(weights_tmp, write_weights)
            encoded = json.dumps({**config, **digest}, indent=2).encode()
            write_synced(config_tmp, lambda handle: handle.write(encoded))
            if os.path.exists(config_path):
                os.replace(config_tmp, config_path)
                committed = True
                os.replace(weights_tmp, weights_path)
            else:
                os.replace(weights_tmp, weights_path)
                os.replace(config_tmp, config_path)
            sync_directory(directory)
        finally:
            # after the commit the weights' temporary file holds the committed weights: the next save renames it
            for leftover in (config_tmp,) if committed else (weights_tmp, config_tmp):
                if os.path.exists(leftover):
                    os.remove(leftover)


# ---------------------------------------------------------------------------------------------- reading


def tensor_layout(path: str) -> tuple[list[tuple[str, np.dtype, tuple[int, ...]]], dict]:
    """
    ([(name, dtype, shape)] in the order of their bytes, metadata) of a safetensors file, as safetensors' own parser
    reads and checks it (header, dtypes, shapes and offsets that cover the data exactly); a truncated or corrupt file
    is refused in one line.
    """
    try:
        with safe_open(path, framework="numpy") as weights:
            metadata = weights.metadata() or {}
            entries = [(name, weights.get_slice(name)) for name in weights.offset_keys()]
            layout = [(name, entry.get_dtype(), tuple(entry.get_shape())) for name, entry in entries]
    except SafetensorError as error:
        raise GalleryError(f"{path} is truncated or corrupt: {error}.") from None
    for name, dtype, _ in layout:
        if dtype not in SAFETENSORS_DTYPES:
            raise GalleryError(f"{path} is unsupported: tensor {name!r} is {dtype}, not one of {list(SAFETENSORS_DTYPES)}.")
    return [(name, SAFETENSORS_DTYPES[dtype], shape) for name, dtype, shape in layout], metadata


def memory_map_safetensors(path: str, handle) -> tuple[dict[str, np.ndarray], dict] | None:
    """
    Every tensor of the safetensors file open as `handle` as a read-only numpy memmap (no row is read), and the
    file's metadata. safetensors' numpy tensors are copies in memory, so its parser only lays the file out
    (`tensor_layout`): the tensors lie back to back up to the end of the file. None when another file was renamed
    onto `path` after `handle` was opened (the layout read would not be the handle's).
    """
    try:
        layout, metadata = tensor_layout(path)  # by name: a concurrent save may have renamed the file away since
        if not os.path.samestat(os.fstat(handle.fileno()), os.stat(path)):
            return None
    except FileNotFoundError:
        return None
    sizes = [math.prod(shape) * dtype.itemsize for _, dtype, shape in layout]
    start = os.fstat(handle.fileno()).st_size - sum(sizes)
    tensors = {}
    for (name, dtype, shape), size in zip(layout, sizes):
        if size == 0:  # mmap cannot map zero bytes
            tensors[name] = np.zeros(shape, dtype=dtype)
        else:
            tensors[name] = np.memmap(handle, dtype=dtype, mode="r", offset=start, shape=shape)
        start += size
    return tensors, metadata


def open_committed_weights(directory: str, config: dict, verify: bool | None) -> tuple[str, dict, dict] | None:
    """
    (path, tensors, metadata) of the weights gallery.json describes: gallery.safetensors, or, in the moment between
    a save's commit and its weights' rename, the weights under their temporary name. None when neither carries the
    JSON's save_id (a concurrent save moved them: read gallery.json again). Galleries saved before save_id existed
    carry none and open gallery.safetensors as it is. The weights must fit the JSON (`check_weights_match_config`);
    `verify` (None: for files up to VERIFY_LIMIT_BYTES) checks
    the file's sha256 against the JSON's and every stored value (`verify_weights`).
    """
    save_id = config.get("save_id")
    names = [GALLERY_WEIGHTS_NAME]
    if isinstance(save_id, str) and SAVE_ID.fullmatch(save_id):
        names.append(staged_weights_name(save_id))
    for name in names:
        path = os.path.join(directory, name)
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            continue
        with handle:  # the maps keep the file open
            mapped = memory_map_safetensors(path, handle)
            if mapped is None:
                return None
            tensors, metadata = mapped
            if "save_id" not in config or metadata.get("save_id") == save_id:
                check_weights_match_config(directory, config, tensors, metadata)
                if verify or (verify is None and os.fstat(handle.fileno()).st_size <= VERIFY_LIMIT_BYTES):
                    verify_weights(path, handle, config, tensors)
                return path, tensors, metadata
    return None


def verify_weights(path: str, handle, config: dict, tensors: dict) -> None:
    """
    Refuses weights whose sha256 is not the one gallery.json records (a flipped bit, a changed or damaged file) or
    that hold values no save writes: NaN or infinite features or scores, boxes outside [0, 1] (0xFF bytes, say).
    Reads the whole file once.
    """
    expected = config.get("weights_sha256")
    if expected is not None:
        handle.seek(0)
        found = hashlib.file_digest(handle, "sha256").hexdigest()
        if found != expected:
            raise GalleryError(
                f"{path} is corrupt: its sha256 is {found[:16]}..., {GALLERY_CONFIG_NAME} records {expected[:16]}... "
                "(a changed or damaged file); restore or rebuild the gallery."
            )
    features = tensors.get("features")
    for start in range(0, 0 if features is None else len(features), VERIFY_CHUNK_ROWS):
        chunk = np.asarray(features[start : start + VERIFY_CHUNK_ROWS])
        if not np.isfinite(chunk).all():
            row = start + int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
            raise GalleryError(f"{path} is corrupt: the features of row {row} are NaN or infinite.")
    if "scores" in tensors and not np.isfinite(tensors["scores"]).all():
        raise GalleryError(f"{path} is corrupt: scores hold NaN or infinite values.")
    if "boxes" in tensors and not ((tensors["boxes"] >= 0) & (tensors["boxes"] <= 1)).all():
        raise GalleryError(f"{path} is corrupt: boxes lie outside [0, 1] (or are NaN).")


CONFIG_FIELDS = {
    "format_version": int,
    "backbone": str,
    "feature_dim": int,
    "dtype": str,
    "concepts": list,
    "counts": dict,
    "num_rows": int,
    "thumbnail_size": (int, type(None)),
}


def read_gallery_config(directory: str) -> dict:
    """gallery.json, checked for the fields and version this code reads."""
    for name in (GALLERY_CONFIG_NAME, GALLERY_WEIGHTS_NAME):
        if not os.path.isfile(os.path.join(directory, name)):
            raise GalleryError(f"No complete gallery in {directory}: {name} is missing.")
    path = os.path.join(directory, GALLERY_CONFIG_NAME)
    try:
        with open(path, "rb") as handle:
            config = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise GalleryError(f"{path} is corrupt: {error}.") from error
    if not isinstance(config, dict):
        raise GalleryError(f"{path} is corrupt: it is not a JSON object.")
    if config.get("format_version") != FORMAT_VERSION:
        raise GalleryError(
            f"{path}: unknown gallery format_version {config.get('format_version')!r}; this code reads "
            f"version {FORMAT_VERSION}."
        )
    for field, kind in CONFIG_FIELDS.items():
        if not isinstance(config.get(field), kind):
            raise GalleryError(f"{path} is corrupt: field {field!r} is {config.get(field)!r}.")
    if not isinstance(config.get("weights_sha256", ""), str):
        raise GalleryError(f"{path} is corrupt: field 'weights_sha256' is {config['weights_sha256']!r}.")
    if not isinstance(config.get("preprocessing", {}), dict):
        raise GalleryError(f"{path} is corrupt: field 'preprocessing' is {config['preprocessing']!r}.")
    if config["dtype"] not in FEATURE_DTYPES:
        raise GalleryError(f"{path}: unsupported feature dtype {config['dtype']!r} (not {list(FEATURE_DTYPES)}).")
    if config["num_rows"] <= 0 or not config["concepts"]:
        raise GalleryError(
            f"{path}: the gallery is empty ({config['num_rows']} rows, {len(config['concepts'])} concepts)."
        )
    return config


def check_expectations(config: dict, expected_backbone: str | None, expected_feature_dim: int | None) -> None:
    if expected_backbone is not None and config["backbone"] != expected_backbone:
        raise GalleryError(
            f"The gallery was built with {config['backbone']!r} but the model expects {expected_backbone!r}; "
            "rebuild the gallery with the model's backbone."
        )
    if expected_feature_dim is not None and config["feature_dim"] != expected_feature_dim:
        raise GalleryError(
            f"The gallery holds {config['feature_dim']}-d features but the model expects {expected_feature_dim}-d."
        )


def check_weights_match_config(directory: str, config: dict, tensors: dict, file_metadata: dict) -> None:
    """Refuses a gallery.safetensors that is not the one gallery.json describes."""

    def disagree(what: str) -> GalleryError:
        return GalleryError(f"{directory}: {GALLERY_CONFIG_NAME} and {GALLERY_WEIGHTS_NAME} disagree: {what}.")

    # Galleries saved before save_id existed carry none; every save now writes one.
    if "save_id" in config and file_metadata.get("save_id") != config["save_id"]:
        raise disagree("they come from different saves (an interrupted save?)")
    missing = [name for name in REQUIRED_TENSORS if name not in tensors]
    if missing:
        raise disagree(f"the weights lack tensors {missing}")
    rows, dim, size = config["num_rows"], config["feature_dim"], config["thumbnail_size"]
    features = tensors["features"]
    if features.shape != (rows, dim):
        raise disagree(f"the JSON describes {rows} x {dim} features, the weights hold {features.shape}")
    if features.dtype != FEATURE_DTYPES[config["dtype"]]:
        raise disagree(f"the JSON says {config['dtype']} features, the weights hold {features.dtype.name}")
    if size is None and "thumbnails" in tensors:
        raise disagree("the weights hold thumbnails the JSON does not mention")
    shapes = {"boxes": (rows, 4), "image_ids": (rows,), "scores": (rows,)}
    shapes["concept_offsets"] = (len(config["concepts"]) + 1,)
    if size is not None:
        shapes["thumbnails"] = (rows, size, size, 3)
    for name, shape in shapes.items():
        got = tensors[name].shape if name in tensors else "nothing"
        if got != shape:
            raise disagree(f"{name} should have shape {shape}, got {got}")
    offsets = np.asarray(tensors["concept_offsets"])
    if offsets[0] != 0 or offsets[-1] != rows or (np.diff(offsets) < 0).any():
        raise disagree(f"concept_offsets must rise from 0 to {rows}")
    if dict(zip(config["concepts"], np.diff(offsets).tolist())) != config["counts"]:
        raise disagree("the per-concept counts differ")


def reopen_gallery(directory: str, save_id: str | None) -> "PatchGallery":
    """Opens an unpickled disk-backed gallery again, if its files are still the ones that were pickled."""
    gallery = PatchGallery.load(directory, verify=False)  # verified, if at all, where it was first opened
    if gallery.save_id != save_id:
        raise GalleryError(f"The gallery in {directory} was saved again after this copy of it was pickled.")
    return gallery


# ---------------------------------------------------------------------------------------------- gallery


class PatchGallery:
    """
    Patches of each concept: features (N, D), boxes (N, 4), source image ids (N,), tagger scores (N,) and optional
    thumbnails (N, t, t, 3), rows grouped by concept as `concept_offsets` (C + 1,) says. Read-only: the arrays may be
    memory maps, and copies share them.

    Make one with `PatchGalleryBuilder`, `PatchGallery.from_arrays`, `PatchGallery.load` or `PatchGallery.merge`.
    The constructor only checks that the arrays fit together and never reads rows, so that a memory-mapped gallery
    opens in constant time; `source` is the (directory, save_id) it was opened from.
    """

    def __init__(
        self,
        backbone: str,
        concepts: list[str],
        features: np.ndarray,
        boxes: np.ndarray,
        image_ids: np.ndarray,
        scores: np.ndarray,
        concept_offsets: np.ndarray,
        thumbnails: np.ndarray | None = None,
        source: tuple[str, str | None] | None = None,
        preprocessing: dict | None = None,
    ):
        concept_offsets = np.array(concept_offsets, dtype=np.int64)  # a copy in RAM: every draw reads it
        if features.ndim != 2:
            raise GalleryError(f"Features must have shape (N, D), got {features.shape}.")
        if len(concepts) == 0 or len(features) == 0:
            raise GalleryError("The gallery is empty: it needs at least one concept with one patch.")
        if len(set(concepts)) != len(concepts):
            raise GalleryError("Concept names must be unique within a gallery.")
        if (
            concept_offsets.shape != (len(concepts) + 1,)
            or concept_offsets[0] != 0
            or concept_offsets[-1] != len(features)
            or (np.diff(concept_offsets) < 0).any()
        ):
            raise GalleryError(
                f"concept_offsets must rise from 0 to {len(features)} in {len(concepts) + 1} entries (one more than "
                f"the concepts), got {concept_offsets.tolist()[:8]}..."
            )
        columns = {"boxes": boxes, "image_ids": image_ids, "scores": scores, "thumbnails": thumbnails}
        for name, array in columns.items():
            if array is not None and len(array) != len(features):
                raise GalleryError(f"{name} has {len(array)} rows but features have {len(features)}.")
        self.backbone = backbone
        self.preprocessing = preprocessing
        self.concepts = list(concepts)
        self.features, self.boxes, self.image_ids, self.scores = features, boxes, image_ids, scores
        self.thumbnails = thumbnails
        self.concept_offsets = concept_offsets
        self._starts = concept_offsets[:-1]
        self._counts = np.diff(concept_offsets)
        self._concept_index = {concept: index for index, concept in enumerate(self.concepts)}
        self._source = source

    @classmethod
    def from_arrays(
        cls,
        backbone: str,
        concepts: list[str],
        features,
        boxes,
        image_ids,
        scores,
        concept_offsets,
        thumbnails=None,
        dtype=np.float16,
    ) -> "PatchGallery":
        """
        An in-memory gallery from arrays laid out as on disk (rows of concept c at offsets[c]:offsets[c + 1]), every
        row checked as `PatchGalleryBuilder.add` checks it and features stored as `dtype`.
        """
        unchecked = cls(
            backbone, concepts, as_numpy(features), as_numpy(boxes), as_numpy(image_ids), as_numpy(scores),
            as_numpy(concept_offsets), None if thumbnails is None else as_numpy(thumbnails),
        )  # fmt: skip
        builder = PatchGalleryBuilder(backbone, unchecked.feature_dim, dtype)
        builder.add_gallery(unchecked)
        return builder.build()

    # ------------------------------------------------------------------------------------------ summary

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def dtype(self) -> np.dtype:
        """How the features are stored (float16 unless built otherwise)."""
        return self.features.dtype

    @property
    def thumbnail_size(self) -> int | None:
        return None if self.thumbnails is None else int(self.thumbnails.shape[1])

    @property
    def counts(self) -> dict[str, int]:
        """Rows per concept, in row order."""
        return {concept: int(count) for concept, count in zip(self.concepts, self._counts)}

    @property
    def save_id(self) -> str | None:
        """The id of the save this gallery was opened from; None in memory."""
        return None if self._source is None else self._source[1]

    def __len__(self) -> int:
        return len(self.features)

    def __contains__(self, concept: str) -> bool:
        """Whether `concept` has at least one patch to sample."""
        index = self._concept_index.get(concept)
        return index is not None and self._counts[index] > 0

    def __repr__(self) -> str:
        thumbnails = "" if self.thumbnails is None else f", thumbnails={self.thumbnail_size}x{self.thumbnail_size}"
        return (
            f"PatchGallery(backbone={self.backbone!r}, feature_dim={self.feature_dim}, dtype={self.dtype.name}, "
            f"concepts={len(self.concepts)}, rows={len(self)}{thumbnails})"
        )

    def summary(self) -> str:
        """A table of the patches per concept, under the `repr` line."""
        width = max(len("concept"), *map(len, self.concepts))
        lines = [repr(self), f"  {'concept':<{width}}  {'patches':>9}  {'share':>6}"]
        for concept, count in self.counts.items():
            lines.append(f"  {concept:<{width}}  {count:>9}  {count / len(self):>6.1%}")
        return "\n".join(lines)

    # ------------------------------------------------------------------------------------------ sampling

    def sample(self, concepts: list[str], generator: np.random.Generator) -> np.ndarray:
        """
        One row drawn uniformly from the rows of each of the K `concepts`: (K,) int64 indices. O(1) per draw whatever
        the size of the gallery: offsets[c] + floor(u * count[c]) with u uniform in [0, 1).
        """
        try:
            ids = np.array([self._concept_index[concept] for concept in concepts], dtype=np.int64)
        except KeyError as error:
            unknown = error.args[0]
            raise KeyError(f"Concept {unknown!r} is not in the gallery; check with `concept in gallery`.") from None
        counts = self._counts[ids]
        if not counts.all():
            empty = sorted({concepts[i] for i in np.flatnonzero(counts == 0)})
            raise KeyError(f"Concepts {empty} have no patches in the gallery; check with `concept in gallery`.")
        return self._starts[ids] + (generator.random(len(ids)) * counts).astype(np.int64)

    def features_at(self, indices) -> torch.Tensor:
        """(K,) row indices -> (K, D) float32 features."""
        return torch.from_numpy(self.features[np.asarray(indices, dtype=np.int64)]).float()

    def boxes_at(self, indices) -> torch.Tensor:
        """(K,) row indices -> (K, 4) float32 boxes x1, y1, x2, y2 in [0, 1]."""
        return torch.from_numpy(self.boxes[np.asarray(indices, dtype=np.int64)]).float()

    def thumbnails_at(self, indices) -> np.ndarray | None:
        """(K,) row indices -> (K, t, t, 3) uint8 thumbnails for pictures, or None when the gallery stores none."""
        if self.thumbnails is None:
            return None
        return self.thumbnails[np.asarray(indices, dtype=np.int64)]

    # ------------------------------------------------------------------------------------------ storage

    def save(self, directory) -> None:
        """Writes gallery.safetensors and gallery.json into `directory` atomically (see `write_gallery`)."""
        config = gallery_config(
            self.backbone, self.feature_dim, self.dtype, self.concepts, self.concept_offsets, self.thumbnail_size,
            self.preprocessing,
        )  # fmt: skip
        tensors = {
            "features": [self.features],
            "boxes": [self.boxes],
            "image_ids": [self.image_ids],
            "scores": [self.scores],
            "concept_offsets": [self.concept_offsets],
        }
        if self.thumbnails is not None:
            tensors["thumbnails"] = [self.thumbnails]
        write_gallery(directory, config, tensors)

    @classmethod
    def load(
        cls, directory, expected_backbone: str | None = None, expected_feature_dim: int | None = None,
        verify: bool | None = None,
    ) -> "PatchGallery":
        """
        Opens a saved gallery memory-mapped, refusing one that is incomplete, corrupt, empty, or made by another
        backbone or with another feature size than expected.

        `verify` reads the whole file once to check its sha256 against the one gallery.json records and that every
        stored value is finite (`verify_weights`): a flipped bit is refused. None (the default) verifies galleries of
        up to 256 MiB (VERIFY_LIMIT_BYTES, well under a second) and opens bigger ones in constant time, no row read;
        True always verifies (scripts/pretrain.py does, once per run), False never.
        """
        directory = os.fspath(directory)
        deadline = time.monotonic() + LOAD_RETRY_SECONDS
        while True:
            config = read_gallery_config(directory)
            check_expectations(config, expected_backbone, expected_feature_dim)
            opened = open_committed_weights(directory, config, verify)
            if opened is not None:
                break
            if time.monotonic() > deadline:
                raise GalleryError(
                    f"{directory}: {GALLERY_CONFIG_NAME} and {GALLERY_WEIGHTS_NAME} disagree: they come from different "
                    "saves (an interrupted save?)."
                )
            time.sleep(0.01)  # a save committed between reading gallery.json and opening its weights
        _, tensors, _ = opened
        return cls(
            config["backbone"],
            config["concepts"],
            tensors["features"],
            tensors["boxes"],
            tensors["image_ids"],
            tensors["scores"],
            tensors["concept_offsets"],
            tensors.get("thumbnails"),
            source=(directory, config.get("save_id")),
            preprocessing=config.get("preprocessing"),
        )

    def __reduce_ex__(self, protocol):
        # A memory-mapped gallery pickles (into spawned DataLoader workers, say) as its path, not as gigabytes of rows.
        if self._source is not None:
            return reopen_gallery, self._source
        return super().__reduce_ex__(protocol)

    def __copy__(self):
        return self  # read-only, so a copy may be the same object

    def __deepcopy__(self, memo):
        return self  # read-only: sharing beats reading a memory map into RAM

    @classmethod
    def merge(cls, galleries: list["PatchGallery"]) -> "PatchGallery":
        """
        One in-memory gallery with every row of `galleries`: concepts in order of first appearance, each concept's
        rows in gallery order. They must share backbone, feature size and thumbnail size; features take the widest
        of their dtypes.
        """
        if not galleries:
            raise GalleryError("Nothing to merge.")
        first = galleries[0]
        for other in galleries[1:]:
            if (other.backbone, other.feature_dim) != (first.backbone, first.feature_dim):
                raise GalleryError(
                    f"Cannot merge a {other.backbone!r} gallery ({other.feature_dim}-d) with a {first.backbone!r} "
                    f"gallery ({first.feature_dim}-d)."
                )
            if other.preprocessing != first.preprocessing:
                raise GalleryError(
                    f"Cannot merge galleries whose crops were made differently: {first.preprocessing} and "
                    f"{other.preprocessing}."
                )
            if other.thumbnail_size != first.thumbnail_size:
                raise GalleryError(
                    f"Cannot merge galleries with thumbnail sizes {first.thumbnail_size} and {other.thumbnail_size}."
                )
        dtype = np.result_type(*(gallery.dtype for gallery in galleries))
        builder = PatchGalleryBuilder(first.backbone, first.feature_dim, dtype, first.thumbnail_size, first.preprocessing)
        for gallery in galleries:
            builder.add_gallery(gallery)
        return builder.build()


# ---------------------------------------------------------------------------------------------- building


class PatchGalleryBuilder:
    """
    Collects tagged regions incrementally, concepts in any order and interleaved, then builds a `PatchGallery` in
    memory (`build`) or writes one to disk (`save`), its rows grouped by concept in order of first appearance.

    Args:
        backbone: the feature extractor the features come from; a model refuses a gallery made by another one.
        feature_dim: D, the size of every feature row.
        dtype: how features are stored: float16 (half the disk and page cache) or float32.
        thumbnail_size: side t of the (t, t, 3) uint8 thumbnails every add must carry; None lets the first add
            decide, with thumbnails or without.
        preprocessing: how the backbone's input crops were made (`RegionFeatureExtractor.preprocessing`), recorded
            so that features computed later for the same model are made alike.
    """

    def __init__(self, backbone: str, feature_dim: int, dtype=np.float16, thumbnail_size: int | None = None,
                 preprocessing: dict | None = None):  # fmt: skip
        if not isinstance(backbone, str) or not backbone:
            raise GalleryError("A gallery must record the backbone that made its features.")
        if not isinstance(feature_dim, int) or feature_dim <= 0:
            raise GalleryError(f"feature_dim must be a positive integer, got {feature_dim!r}.")
        if np.dtype(dtype).name not in FEATURE_DTYPES:
            raise GalleryError(f"Features are stored as one of {list(FEATURE_DTYPES)}, not {np.dtype(dtype).name}.")
        if thumbnail_size is not None and (not isinstance(thumbnail_size, int) or thumbnail_size <= 0):
            raise GalleryError(f"thumbnail_size must be a positive integer or None, got {thumbnail_size!r}.")
        self.backbone, self.feature_dim, self.preprocessing = backbone, feature_dim, preprocessing
        self.dtype = FEATURE_DTYPES[np.dtype(dtype).name]
        self.thumbnail_size = thumbnail_size
        self._thumbnails_decided = thumbnail_size is not None
        self._parts: dict[str, list[dict[str, np.ndarray]]] = {}

    def add(self, concept: str, features, boxes, image_ids, scores, thumbnails=None) -> None:
        """
        Adds N rows of one concept: features (N, D), boxes (N, 4) as normalised x1, y1, x2, y2, image_ids (N,)
        integers, scores (N,), thumbnails (N, t, t, 3) uint8; numpy arrays, torch tensors or lists, all copied.
        N may be 0, which records a concept without patches.
        """
        if not isinstance(concept, str) or not concept.strip():
            raise GalleryError(f"A concept name must be a non-empty string, got {concept!r}.")
        where = f"add({concept!r})"
        part = {"features": checked_features(features, self.feature_dim, self.dtype, where)}
        rows = len(part["features"])
        part["boxes"] = checked_boxes(boxes, rows, where)
        part["image_ids"] = checked_column(image_ids, rows, np.dtype(np.int64), "image_ids", where)
        part["scores"] = checked_column(scores, rows, np.dtype(np.float32), "scores", where)
        if self._thumbnails_decided and (thumbnails is None) != (self.thumbnail_size is None):
            stored = "none" if self.thumbnail_size is None else f"{self.thumbnail_size}x{self.thumbnail_size}"
            raise GalleryError(
                f"{where}: this gallery's thumbnails are {stored}; give thumbnails for every add or for none."
            )
        if thumbnails is not None:
            part["thumbnails"] = checked_thumbnails(thumbnails, rows, self.thumbnail_size, where)
            self.thumbnail_size = part["thumbnails"].shape[1]
        self._thumbnails_decided = True
        self._parts.setdefault(concept, []).append(part)

    def add_gallery(self, gallery: PatchGallery) -> None:
        """Adds every row of `gallery`, concept by concept (checked like any add)."""
        for concept, start, end in zip(gallery.concepts, gallery.concept_offsets[:-1], gallery.concept_offsets[1:]):
            rows = slice(start, end)
            thumbnails = None if gallery.thumbnails is None else gallery.thumbnails[rows]
            self.add(concept, gallery.features[rows], gallery.boxes[rows], gallery.image_ids[rows],
                     gallery.scores[rows], thumbnails)  # fmt: skip

    def _layout(self) -> tuple[list[str], np.ndarray, dict[str, list[np.ndarray]]]:
        """(concepts, (C + 1,) offsets, every tensor as row chunks in concept order)."""
        concepts = list(self._parts)
        counts = [sum(len(part["features"]) for part in self._parts[concept]) for concept in concepts]
        if sum(counts) == 0:
            raise GalleryError("The gallery is empty: no patches were added.")
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        parts = [part for concept in concepts for part in self._parts[concept]]
        chunks = {name: [part[name] for part in parts] for name in parts[0]}
        return concepts, offsets, chunks

    def build(self) -> PatchGallery:
        """The gallery in memory."""
        concepts, offsets, chunks = self._layout()
        arrays = {name: np.concatenate(parts) for name, parts in chunks.items()}
        return PatchGallery(
            self.backbone, concepts, arrays["features"], arrays["boxes"], arrays["image_ids"], arrays["scores"],
            offsets, arrays.get("thumbnails"), preprocessing=self.preprocessing,
        )  # fmt: skip

    def save(self, directory) -> PatchGallery:
        """Writes the gallery into `directory` atomically, straight from the added rows, and opens it memory-mapped."""
        concepts, offsets, chunks = self._layout()
        config = gallery_config(
            self.backbone, self.feature_dim, self.dtype, concepts, offsets, self.thumbnail_size, self.preprocessing
        )
        write_gallery(directory, config, {**chunks, "concept_offsets": [offsets]})
        return PatchGallery.load(directory, verify=False)  # hashed while written


__all__ = ["GALLERY_CONFIG_NAME", "GALLERY_WEIGHTS_NAME", "GalleryError", "PatchGallery", "PatchGalleryBuilder"]
