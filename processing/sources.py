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


def class_balanced_indices(labels: np.ndarray, per_class: int | dict | None, seed: int = 0) -> np.ndarray:
    """Up to `per_class` random indices of each class (all of them when None; a dict gives each class its own
    number), in ascending order."""
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = [
        rng.permutation(np.flatnonzero(labels == label))[: per_class[label] if isinstance(per_class, dict) else per_class]
        for label in np.unique(labels)
    ]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def fashion_mnist_images(split: str, class_names: list[str], indices, directory: str = FASHION_MNIST_DIR) -> Iterator[TaggedImage]:
    """The Fashion-MNIST images `indices`, each as one whole-image region tagged with its class name."""
    images, labels = load_fashion_mnist(split, directory)
    for index in indices:
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


class DataError(ValueError):
    """Image or label data that cannot be used as given: the message says what is wrong and what to do."""


@dataclass
class LabelledImages:
    """A split of a labelled image set: the `datasets` Dataset, its image and label columns, the class names, and the
    (N,) class index of each row (read without decoding a single image)."""

    dataset: "datasets.Dataset"
    image_column: str
    label_column: str
    class_names: list[str]
    labels: np.ndarray

    def image(self, index: int):
        """Row `index`'s image (decoded by the `Image` feature, or a path or bytes opened here)."""
        value = self.dataset[int(index)][self.image_column]
        if isinstance(value, (str, os.PathLike)):
            return load_image_file(value)
        if isinstance(value, dict) and (value.get("bytes") or value.get("path")):  # an undecoded Image value
            from io import BytesIO

            return load_image_file(BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
        return value


def load_labelled_images(name: str, config: str | None = None, split: str | None = None,
                         image_column: str | None = None, label_column: str | None = None,
                         prefer: str | None = None) -> LabelledImages:  # fmt: skip
    """
    One split of a labelled image set, from anything `datasets.load_dataset` takes (a Hub id, a local `imagefolder`
    DIR/<split>/<class>/*.png, data files) or a `save_to_disk` folder. Without `split`, a dataset with one split
    uses it, else the split `prefer`; the image and label columns default to its `Image` and `ClassLabel` features.
    """
    dataset = select_split(open_dataset(name, config), split, name, prefer)
    image_column = image_column or feature_column(dataset, "Image", ("image", "img", "picture", "file", "path"), name)
    label_column = label_column or feature_column(dataset, "ClassLabel", ("label", "labels", "class", "category"), name,
                                                  others=[column for column in dataset.column_names if column != image_column])
    for column in (image_column, label_column):
        if column not in dataset.column_names:
            raise DataError(f"{name} has no column {column!r}; its columns are {dataset.column_names}.")
    if len(dataset) == 0:
        raise DataError(f"The {split or 'chosen'} split of {name} has no rows.")
    feature = dataset.features[label_column]
    values = dataset.select_columns([label_column])[label_column]
    if hasattr(feature, "names"):  # a ClassLabel
        class_names, labels = list(feature.names), np.asarray(values, dtype=np.int64)
    else:  # plain strings or numbers: the distinct values, sorted, are the classes
        class_names = sorted({str(value) for value in values})
        index = {value: position for position, value in enumerate(class_names)}
        labels = np.array([index[str(value)] for value in values], dtype=np.int64)
    return LabelledImages(dataset, image_column, label_column, class_names, labels)


def open_dataset(name: str, config: str | None = None):
    """A Dataset or DatasetDict: a `save_to_disk` folder, or whatever `datasets.load_dataset` takes."""
    import datasets

    path = Path(name)
    try:
        if path.is_dir() and any((path / marker).is_file() for marker in ("dataset_info.json", "dataset_dict.json")):
            return datasets.load_from_disk(str(path))
        return datasets.load_dataset(name, config)
    except (FileNotFoundError, ValueError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as error:
        raise DataError(f"Cannot load the dataset {name!r}: {str(error).splitlines()[0]}") from error


def select_split(dataset, split: str | None, name: str, prefer: str | None = None):
    """The split `split` of a DatasetDict (when None: the only one, else `prefer`), or a plain Dataset as it is."""
    if not hasattr(dataset, "keys"):
        return dataset
    splits = list(dataset.keys())
    if split is None:
        if len(splits) != 1 and prefer not in splits:
            raise DataError(f"{name} has the splits {splits}: choose one with --split.")
        split = splits[0] if len(splits) == 1 else prefer
    if split not in dataset:
        raise DataError(f"{name} has no split {split!r}; it has {splits}.")
    return dataset[split]


def feature_column(dataset, kind: str, usual_names: tuple[str, ...], name: str, others: list[str] = ()) -> str:
    """The one column whose feature is `kind` ("Image", "ClassLabel"), else the first of `usual_names` present, else
    the only column of `others` (a label column beside the image column, whatever its name)."""
    typed = [column for column, feature in dataset.features.items() if type(feature).__name__ == kind]
    if len(typed) == 1:
        return typed[0]
    usual = [column for column in usual_names if column in dataset.column_names] or (list(others) if len(others) == 1 else [])
    if len(typed) > 1 or not usual:
        what = "image" if kind == "Image" else "label"
        raise DataError(
            f"Cannot tell which column of {name} holds the {what}s (columns {dataset.column_names}): pass "
            f"--{what}_column."
        )
    return usual[0]


def labelled_images(source: LabelledImages, indices, names: list[str] | None = None) -> Iterator[TaggedImage]:
    """The rows `indices` of a labelled image set, each one whole-image region tagged with its class's name in
    `names` (by default the class names)."""
    names = names or source.class_names
    for index in indices:
        index = int(index)
        yield TaggedImage(index, lambda index=index: source.image(index), [WHOLE_IMAGE], [names[source.labels[index]]], [1.0])


def holdout_split(labels: np.ndarray, per_class: int | None, share: float, most: int, seed: int = 0):
    """
    (gallery, held-out) row indices, ascending: of each class, `share` of its images (at least 1 of a class with
    two or more, at most `most`) are held out to choose the zero-shot prompt on, and up to `per_class` of the
    rest (all when None) go into the gallery. With `per_class`, the held-out images come from outside the gallery's
    random choice (as `class_balanced_indices` draws both).
    """
    if not 0.0 <= share < 1.0:
        raise DataError(f"The held-out share must be in [0, 1), got {share}.")
    classes, sizes = np.unique(labels, return_counts=True)
    held = {c: (min(most, max(1, int(share * n))) if n > 1 and share > 0 else 0) for c, n in zip(classes, sizes)}
    keep = {c: n - held[c] if per_class is None else min(per_class, n - held[c]) for c, n in zip(classes, sizes)}
    gallery = class_balanced_indices(labels, keep, seed)
    unseen = np.setdiff1d(np.arange(len(labels)), gallery)
    return gallery, unseen[class_balanced_indices(labels[unseen], held, seed)]


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
    "DataError",
    "LabelledImages",
    "TaggedImage",
    "class_balanced_indices",
    "coco_images",
    "holdout_split",
    "labelled_images",
    "load_labelled_images",
    "fashion_mnist_images",
    "folder_images",
    "load_fashion_mnist",
    "read_idx",
]
