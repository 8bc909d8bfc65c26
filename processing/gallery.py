"""PatchGallery: per-concept image patch features for cross-modal CutMix, memory-mapped, sampled in O(1) per draw.

On disk (no pickle): `gallery.safetensors` holds `features` (N, D) float16, `boxes` (N, 4) float32, `image_ids` (N,)
int64, `scores` (N,) float32, `concept_offsets` (C + 1,) int64 and optionally `thumbnails` (N, t, t, 3) uint8, with rows
grouped by concept (concept c owns rows offsets[c]:offsets[c + 1]); `gallery.json` names the concepts, the backbone
that made the features, the feature size and the counts. The JSON is written last and marks the gallery complete.
"""

import json
import os
import struct
import tempfile
from collections import defaultdict

import numpy as np
import torch
from safetensors.numpy import save_file


GALLERY_WEIGHTS_NAME = "gallery.safetensors"
GALLERY_CONFIG_NAME = "gallery.json"
FORMAT_VERSION = 1
SAFETENSORS_DTYPES = {"F16": np.float16, "F32": np.float32, "I64": np.int64, "U8": np.uint8}
REQUIRED_TENSORS = ("features", "boxes", "image_ids", "scores", "concept_offsets")


class GalleryError(ValueError):
    """A gallery that cannot be used: missing, corrupt, empty, or made by another backbone."""


def check_finite_features(features: np.ndarray, feature_dim: int, where: str) -> None:
    if features.ndim != 2 or features.shape[1] != feature_dim:
        raise GalleryError(f"{where}: features must have shape (N, {feature_dim}), got {features.shape}.")
    if not np.isfinite(features).all():
        raise GalleryError(f"{where}: features contain NaN or infinite values.")


def check_boxes(boxes: np.ndarray, rows: int, where: str) -> None:
    if boxes.shape != (rows, 4):
        raise GalleryError(f"{where}: boxes must have shape ({rows}, 4), got {boxes.shape}.")
    if not np.isfinite(boxes).all() or boxes.min(initial=0) < 0 or boxes.max(initial=0) > 1:
        raise GalleryError(f"{where}: boxes must be normalised x1, y1, x2, y2 in [0, 1].")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise GalleryError(f"{where}: a box has x2 < x1 or y2 < y1.")


def write_atomically(directory: str, tensors: dict[str, np.ndarray], metadata: dict) -> None:
    """Writes both files under temporary names, then renames them: the weights first, the JSON (the marker) last."""
    os.makedirs(directory, exist_ok=True)
    config_path = os.path.join(directory, GALLERY_CONFIG_NAME)
    if os.path.exists(config_path):
        os.remove(config_path)  # the old gallery is no longer complete once its weights are being replaced
    temporaries = []
    try:
        weights_tmp = tempfile.NamedTemporaryFile(dir=directory, suffix=".tmp", delete=False).name
        temporaries.append(weights_tmp)
        save_file(tensors, weights_tmp)
        config_tmp = tempfile.NamedTemporaryFile(dir=directory, suffix=".tmp", delete=False, mode="w").name
        temporaries.append(config_tmp)
        with open(config_tmp, "w") as handle:
            json.dump(metadata, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(weights_tmp, os.path.join(directory, GALLERY_WEIGHTS_NAME))
        os.replace(config_tmp, config_path)
    finally:
        for leftover in temporaries:
            if os.path.exists(leftover):
                os.remove(leftover)


def memory_map_safetensors(path: str) -> dict[str, np.ndarray]:
    """Opens every tensor of a safetensors file as a read-only numpy memmap, checking the header against the file."""
    file_size = os.path.getsize(path)
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise GalleryError(f"{path} is truncated: no safetensors header.")
        (header_size,) = struct.unpack("<Q", prefix)
        if header_size > file_size - 8:
            raise GalleryError(f"{path} is truncated or corrupt: its header claims {header_size} bytes.")
        try:
            header = json.loads(handle.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise GalleryError(f"{path} is corrupt: unreadable safetensors header ({error}).") from error
    data_start = 8 + header_size
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES.get(info["dtype"])
        start, end = info["data_offsets"]
        if dtype is None:
            raise GalleryError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}.")
        if data_start + end > file_size:
            raise GalleryError(f"{path} is truncated: tensor {name!r} ends past the end of the file.")
        shape = tuple(info["shape"])
        if end == start:
            tensors[name] = np.zeros(shape, dtype=dtype)
        else:
            tensors[name] = np.memmap(path, dtype=dtype, mode="r", offset=data_start + start, shape=shape)
    return tensors


class PatchGallery:
    """
    Patches of each concept: features (N, D), boxes (N, 4), source image ids (N,), tagger scores (N,), optional
    thumbnails (N, t, t, 3). Read-only; copies share the same (memory-mapped) arrays.
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
    ):
        if len(concepts) == 0 or len(features) == 0:
            raise GalleryError("The gallery is empty: it needs at least one concept with one patch.")
        if len(concept_offsets) != len(concepts) + 1 or concept_offsets[-1] != len(features):
            raise GalleryError(
                f"concept_offsets ({len(concept_offsets)} entries ending at {concept_offsets[-1]}) do not fit "
                f"{len(concepts)} concepts and {len(features)} rows."
            )
        for name, array in (("boxes", boxes), ("image_ids", image_ids), ("scores", scores), ("thumbnails", thumbnails)):
            if array is not None and len(array) != len(features):
                raise GalleryError(f"{name} has {len(array)} rows but features have {len(features)}.")
        self.backbone = backbone
        self.concepts = list(concepts)
        self.features, self.boxes, self.image_ids, self.scores = features, boxes, image_ids, scores
        self.thumbnails = thumbnails
        self.concept_offsets = np.asarray(concept_offsets, dtype=np.int64)
        self._starts = self.concept_offsets[:-1]
        self._counts = np.diff(self.concept_offsets)
        self._concept_index = {concept: index for index, concept in enumerate(self.concepts)}

    # ------------------------------------------------------------------------------------------ summary

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def counts(self) -> dict[str, int]:
        return {concept: int(count) for concept, count in zip(self.concepts, self._counts)}

    def __len__(self) -> int:
        return len(self.features)

    def __contains__(self, concept: str) -> bool:
        index = self._concept_index.get(concept)
        return index is not None and self._counts[index] > 0

    def __deepcopy__(self, memo):
        return self  # read-only: a copy may share the memory map

    def __repr__(self) -> str:
        return (
            f"PatchGallery(backbone={self.backbone!r}, feature_dim={self.feature_dim}, concepts={len(self.concepts)}, "
            f"rows={len(self)})"
        )

    def summary(self) -> str:
        """A table of rows per concept."""
        width = max(map(len, self.concepts))
        lines = [repr(self)] + [f"  {concept:<{width}}  {count:>8}" for concept, count in self.counts.items()]
        return "\n".join(lines)

    # ------------------------------------------------------------------------------------------ sampling

    def sample(self, concepts: list[str], generator: np.random.Generator) -> np.ndarray:
        """One row drawn uniformly from each named concept's rows: (K,) int64 indices, O(1) per draw."""
        try:
            ids = np.fromiter((self._concept_index[c] for c in concepts), dtype=np.int64, count=len(concepts))
        except KeyError as error:
            raise KeyError(f"Concept {error.args[0]!r} is not in the gallery; known: {self.concepts[:10]}...") from None
        counts = self._counts[ids]
        if (counts == 0).any():
            empty = sorted({concepts[i] for i in np.flatnonzero(counts == 0)})
            raise KeyError(f"Concepts {empty} have no patches in the gallery.")
        return self._starts[ids] + (generator.random(len(ids)) * counts).astype(np.int64)

    def features_at(self, indices: np.ndarray) -> np.ndarray:
        """(K,) row indices -> (K, D) float32 features."""
        return np.asarray(self.features[indices], dtype=np.float32)

    def boxes_at(self, indices: np.ndarray) -> np.ndarray:
        """(K,) row indices -> (K, 4) float32 boxes."""
        return np.asarray(self.boxes[indices], dtype=np.float32)

    def thumbnails_at(self, indices: np.ndarray) -> np.ndarray | None:
        """(K,) row indices -> (K, t, t, 3) uint8 thumbnails, or None when the gallery stores none."""
        return None if self.thumbnails is None else np.asarray(self.thumbnails[indices])

    # ------------------------------------------------------------------------------------------ storage

    def save(self, directory: str) -> None:
        """Writes `gallery.safetensors` and `gallery.json` into `directory` atomically."""
        tensors = {
            "features": np.ascontiguousarray(self.features),
            "boxes": np.ascontiguousarray(self.boxes, dtype=np.float32),
            "image_ids": np.ascontiguousarray(self.image_ids, dtype=np.int64),
            "scores": np.ascontiguousarray(self.scores, dtype=np.float32),
            "concept_offsets": self.concept_offsets,
        }
        if self.thumbnails is not None:
            tensors["thumbnails"] = np.ascontiguousarray(self.thumbnails, dtype=np.uint8)
        metadata = {
            "format_version": FORMAT_VERSION,
            "backbone": self.backbone,
            "feature_dim": self.feature_dim,
            "dtype": str(self.features.dtype),
            "num_rows": len(self),
            "concepts": self.concepts,
            "counts": self.counts,
            "thumbnail_size": None if self.thumbnails is None else int(self.thumbnails.shape[1]),
        }
        write_atomically(directory, tensors, metadata)

    @classmethod
    def load(
        cls, directory: str, expected_backbone: str | None = None, expected_feature_dim: int | None = None
    ) -> "PatchGallery":
        """Opens a saved gallery memory-mapped, refusing one that is incomplete, corrupt, or from another backbone."""
        config_path = os.path.join(directory, GALLERY_CONFIG_NAME)
        weights_path = os.path.join(directory, GALLERY_WEIGHTS_NAME)
        for path in (config_path, weights_path):
            if not os.path.isfile(path):
                raise GalleryError(f"No complete gallery in {directory}: {os.path.basename(path)} is missing.")
        try:
            with open(config_path) as handle:
                metadata = json.load(handle)
        except json.JSONDecodeError as error:
            raise GalleryError(f"{config_path} is corrupt: {error}.") from error
        if metadata.get("format_version") != FORMAT_VERSION:
            raise GalleryError(f"{config_path}: unknown gallery format_version {metadata.get('format_version')!r}.")
        if expected_backbone is not None and metadata["backbone"] != expected_backbone:
            raise GalleryError(
                f"The gallery was built with {metadata['backbone']!r} but the model expects {expected_backbone!r}; "
                "rebuild the gallery with the model's backbone."
            )
        if expected_feature_dim is not None and metadata["feature_dim"] != expected_feature_dim:
            raise GalleryError(
                f"The gallery holds {metadata['feature_dim']}-d features but the model expects {expected_feature_dim}."
            )
        tensors = memory_map_safetensors(weights_path)
        missing = [name for name in REQUIRED_TENSORS if name not in tensors]
        if missing:
            raise GalleryError(f"{weights_path} lacks tensors {missing}.")
        if tensors["features"].shape != (metadata["num_rows"], metadata["feature_dim"]):
            raise GalleryError(
                f"{directory}: gallery.json describes {metadata['num_rows']} x {metadata['feature_dim']} features, "
                f"the weights hold {tensors['features'].shape}."
            )
        return cls(
            metadata["backbone"],
            metadata["concepts"],
            tensors["features"],
            tensors["boxes"],
            tensors["image_ids"],
            tensors["scores"],
            np.asarray(tensors["concept_offsets"]),
            tensors.get("thumbnails"),
        )

    @classmethod
    def merge(cls, galleries: list["PatchGallery"]) -> "PatchGallery":
        """One in-memory gallery holding every row of `galleries` (same backbone and feature size required)."""
        if not galleries:
            raise GalleryError("Nothing to merge.")
        first = galleries[0]
        for other in galleries[1:]:
            if (other.backbone, other.feature_dim) != (first.backbone, first.feature_dim):
                raise GalleryError(
                    f"Cannot merge a {other.backbone!r} gallery ({other.feature_dim}-d) into a {first.backbone!r} "
                    f"gallery ({first.feature_dim}-d)."
                )
        builder = PatchGalleryBuilder(first.backbone, first.feature_dim, dtype=first.features.dtype)
        for gallery in galleries:
            for concept, start, end in zip(gallery.concepts, gallery._starts, gallery.concept_offsets[1:]):
                rows = slice(start, end)
                thumbnails = None if gallery.thumbnails is None else gallery.thumbnails[rows]
                builder.add(concept, gallery.features[rows], gallery.boxes[rows], gallery.image_ids[rows],
                            gallery.scores[rows], thumbnails)  # fmt: skip
        return builder.build()


class PatchGalleryBuilder:
    """Collects tagged regions incrementally (concepts in any order), then builds or saves a `PatchGallery`."""

    def __init__(self, backbone: str, feature_dim: int, dtype=np.float16):
        if not backbone:
            raise GalleryError("A gallery must record the backbone that made its features.")
        self.backbone, self.feature_dim, self.dtype = backbone, feature_dim, np.dtype(dtype)
        self._parts: dict[str, list[tuple]] = defaultdict(list)
        self._has_thumbnails: bool | None = None  # fixed by the first add

    def add(self, concept: str, features, boxes, image_ids, scores, thumbnails=None) -> None:
        """Adds N rows of one concept: features (N, D), boxes (N, 4), image_ids (N,), scores (N,), thumbnails (N, t, t, 3)."""
        if not isinstance(concept, str) or not concept.strip():
            raise GalleryError(f"A concept name must be a non-empty string, got {concept!r}.")
        features = features.numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
        where = f"add({concept!r})"
        check_finite_features(features, self.feature_dim, where)
        rows = len(features)
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) if rows else np.zeros((0, 4), np.float32)
        check_boxes(boxes, rows, where)
        image_ids, scores = np.asarray(image_ids, dtype=np.int64), np.asarray(scores, dtype=np.float32)
        if image_ids.shape != (rows,) or scores.shape != (rows,):
            raise GalleryError(f"{where}: image_ids and scores need {rows} entries, got {image_ids.shape}, {scores.shape}.")
        if self._has_thumbnails is not None and (thumbnails is not None) != self._has_thumbnails:
            raise GalleryError(f"{where}: give thumbnails for every add or for none.")
        if thumbnails is not None:
            thumbnails = np.asarray(thumbnails, dtype=np.uint8)
            if thumbnails.ndim != 4 or len(thumbnails) != rows or thumbnails.shape[-1] != 3:
                raise GalleryError(f"{where}: thumbnails must have shape ({rows}, t, t, 3), got {thumbnails.shape}.")
        self._has_thumbnails = thumbnails is not None
        if rows:
            self._parts[concept].append((features.astype(self.dtype), boxes, image_ids, scores, thumbnails))

    def build(self) -> PatchGallery:
        concepts = list(self._parts)
        if not concepts:
            raise GalleryError("The gallery is empty: no patches were added.")
        parts = [part for concept in concepts for part in self._parts[concept]]
        counts = [sum(len(part[0]) for part in self._parts[concept]) for concept in concepts]
        columns = [np.concatenate([part[i] for part in parts]) for i in range(4)]
        thumbnails = np.concatenate([part[4] for part in parts]) if self._has_thumbnails else None
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return PatchGallery(self.backbone, concepts, *columns, offsets, thumbnails)

    def save(self, directory: str) -> PatchGallery:
        gallery = self.build()
        gallery.save(directory)
        return gallery


__all__ = ["GALLERY_CONFIG_NAME", "GALLERY_WEIGHTS_NAME", "GalleryError", "PatchGallery", "PatchGalleryBuilder"]
