"""Image-only corpora for the patch gallery: Fashion-MNIST idx files, COCO-format annotations, `datasets` folders.

Each source yields `TaggedImage`s: an image (or its loader) with the regions a tagger or annotator gave it.
"""

import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
IDX_IMAGE_MAGIC, IDX_LABEL_MAGIC = 2051, 2049
WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)


@dataclass
class TaggedImage:
    """An image with its tagged regions: boxes (R, 4) normalised x1, y1, x2, y2, one concept and score per box."""

    image_id: int
    load: "callable"  # () -> PIL image or array; deferred so that a corrupt file is skipped, not fatal
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    concepts: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
    """Reads an idx file (gzipped or not): images (N, rows, cols) uint8 or labels (N,) uint8."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    header_size = 16 if magic == IDX_IMAGE_MAGIC else 8
    if len(data) < header_size or int.from_bytes(data[:4], "big") != magic:
        raise ValueError(f"{path} is not an idx file with magic number {magic}.")
    count = int.from_bytes(data[4:8], "big")
    shape = (count,) if magic == IDX_LABEL_MAGIC else (count, int.from_bytes(data[8:12], "big"), int.from_bytes(data[12:16], "big"))
    expected = int(np.prod(shape))
    if len(data) - header_size != expected:
        raise ValueError(f"{path} is truncated: {len(data) - header_size} bytes of data for shape {shape}.")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def load_fashion_mnist(split: str = "train", directory: str = FASHION_MNIST_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images (N, 28, 28) uint8 and class ids (N,), from Debian's `dataset-fashion-mnist` files."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"Fashion-MNIST has the splits 'train' and 'test', not {split!r}.")
    images_path = Path(directory) / f"{prefix}-images-idx3-ubyte.gz"
    if not images_path.exists():
        raise FileNotFoundError(
            f"{images_path} is missing. Install the data with `apt-get install dataset-fashion-mnist` (Debian), or "
            "download the four idx files of Fashion-MNIST into a folder and pass it."
        )
    images = read_idx(images_path, IDX_IMAGE_MAGIC)
    labels = read_idx(Path(directory) / f"{prefix}-labels-idx1-ubyte.gz", IDX_LABEL_MAGIC)
    if len(images) != len(labels):
        raise ValueError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels.")
    return images, labels


def class_balanced_indices(labels: np.ndarray, per_class: int | None, seed: int = 0) -> np.ndarray:
    """Up to `per_class` random indices of each class (all of them when None), in ascending order."""
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == label))[:per_class] for label in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


def fashion_mnist_images(split: str, class_names: list[str], per_class: int | None = None, seed: int = 0,
                         directory: str = FASHION_MNIST_DIR) -> Iterator[TaggedImage]:  # fmt: skip
    """Each Fashion-MNIST image as one whole-image region tagged with its class name."""
    images, labels = load_fashion_mnist(split, directory)
    for index in class_balanced_indices(labels, per_class, seed):
        yield TaggedImage(int(index), lambda image=images[index]: image, [WHOLE_IMAGE], [class_names[labels[index]]], [1.0])


def coco_images(annotation_file: str | os.PathLike, image_dir: str | os.PathLike) -> Iterator[TaggedImage]:
    """Images of a COCO-format annotation file (`images`, `annotations` with `bbox` x, y, w, h, `categories`)."""
    with open(annotation_file) as handle:
        coco = json.load(handle)
    names = {category["id"]: category["name"] for category in coco["categories"]}
    regions: dict[int, list] = {}
    for annotation in coco["annotations"]:
        regions.setdefault(annotation["image_id"], []).append(annotation)
    for image in coco["images"]:
        width, height = image["width"], image["height"]
        tagged = TaggedImage(image["id"], lambda path=Path(image_dir) / image["file_name"]: load_image_file(path))
        for annotation in regions.get(image["id"], []):
            x, y, w, h = annotation["bbox"]
            box = (x / width, y / height, min((x + w) / width, 1.0), min((y + h) / height, 1.0))
            if box[2] > box[0] and box[3] > box[1]:
                tagged.boxes.append(box)
                tagged.concepts.append(names[annotation["category_id"]])
                tagged.scores.append(float(annotation.get("score", 1.0)))
        yield tagged


def dataset_images(path: str, image_column: str, label_column: str, split: str | None = None) -> Iterator[TaggedImage]:
    """A `datasets` dataset saved on disk: one whole-image region per row, tagged with its (class) label."""
    from datasets import load_from_disk

    dataset = load_from_disk(path)
    if split is not None:
        dataset = dataset[split]
    missing = {image_column, label_column} - set(dataset.column_names)
    if missing:
        raise KeyError(f"{path} has no column(s) {sorted(missing)}; it has {dataset.column_names}.")
    names = getattr(dataset.features[label_column], "names", None)
    for index, row in enumerate(dataset):
        label = row[label_column]
        concept = names[label] if names is not None and isinstance(label, int) else str(label)
        yield TaggedImage(index, lambda image=row[image_column]: image, [WHOLE_IMAGE], [concept], [1.0])


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def folder_images(directory: str | os.PathLike) -> Iterator[TaggedImage]:
    """The image files of a folder (recursively, in name order), untagged: a tagger gives their regions."""
    paths = sorted(p for p in Path(directory).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"{directory} holds no image file ({', '.join(IMAGE_SUFFIXES)}).")
    for index, path in enumerate(paths):
        yield TaggedImage(index, lambda path=path: load_image_file(path))


def load_image_file(path: str | os.PathLike):
    """Opens an image file fully (so that a truncated file fails here, where it can be skipped)."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image.copy()


__all__ = [
    "TaggedImage",
    "class_balanced_indices",
    "coco_images",
    "dataset_images",
    "fashion_mnist_images",
    "folder_images",
    "load_fashion_mnist",
    "read_idx",
]
