"""
Task data for fine-tuning VLMixer, on top of `datasets`: a split checked against a task's columns (one-line
`TaskDataError`s), its image columns as `Image` features (decoded images, file paths or bytes alike), each image's
region features added with `Dataset.map` into the `datasets` cache, and a row's processor inputs.

Loading itself is `datasets.load_dataset` / `load_from_disk` (scripts/finetuning.py); the example tasks are made by
scripts/make_tasks.py.
"""

import hashlib
import json
import os
from collections.abc import Iterable
from functools import partial
from pathlib import Path

import numpy as np


class TaskDataError(ValueError):
    """Task data that cannot be used: a missing split, column or image, an unknown label, a bad box."""


TASKS = ("retrieval", "vqa", "reasoning", "classification", "captioning")
TASK_COLUMNS = {  # what each task needs in a row
    "retrieval": ("image", "boxes", "text"),
    "vqa": ("image", "boxes", "text", "answers", "scores"),
    "reasoning": ("image_left", "boxes_left", "image_right", "boxes_right", "text", "label"),
    "classification": ("image", "boxes", "text", "label"),
    "captioning": ("image", "boxes", "references"),
}
# (image column, its boxes, its region features): one row may hold one image or two (reasoning: left, right)
REGION_COLUMNS = (("image", "boxes", "features"), ("image_left", "boxes_left", "features_left"),
                  ("image_right", "boxes_right", "features_right"))  # fmt: skip
# list columns that CSV files hold as JSON text
LIST_COLUMNS = ("boxes", "boxes_left", "boxes_right", "objects", "objects_left", "objects_right", "answers", "scores",
                "references")  # fmt: skip


# ============================================================================================== checking a split


def prepare_split(dataset, task: str, split: str, base_dir: str | os.PathLike | None = None):
    """
    A split ready for region features: the task's columns present (`TASK_COLUMNS`), CSV list columns decoded, image
    columns as `Image` features (relative paths start at `base_dir`, the folder of the data file) and boxes
    normalised [x1, y1, x2, y2] with x2 > x1 and y2 > y1.
    """
    if task not in TASK_COLUMNS:
        raise TaskDataError(f"Unknown task {task!r}; the tasks are {list(TASK_COLUMNS)}.")
    check_columns(dataset, TASK_COLUMNS[task], f"The {split} split")
    if len(dataset) == 0:
        raise TaskDataError(f"The {split} split has no rows.")
    dataset = decode_list_columns(dataset)
    for image_column, _, features_column in REGION_COLUMNS:
        if image_column in dataset.column_names and features_column not in dataset.column_names:
            dataset = as_image_column(dataset, image_column, base_dir)
    check_boxes(dataset, split)
    return dataset


def check_columns(dataset, needed: Iterable[str], what: str) -> None:
    missing = [column for column in needed if column not in dataset.column_names]
    if missing:
        raise TaskDataError(f"{what} lacks the column(s) {missing}; it has {dataset.column_names}.")


def is_text(feature) -> bool:
    """Whether a `datasets` feature is a string column."""
    return getattr(feature, "dtype", None) in ("string", "large_string")


def decode_list_columns(dataset):
    """List columns stored as JSON text (CSV) back to lists."""
    for column in LIST_COLUMNS:
        if column in dataset.column_names and is_text(dataset.features[column]):
            values = []
            for index, text in enumerate(dataset[column]):
                try:
                    values.append(json.loads(text))
                except (TypeError, json.JSONDecodeError):
                    raise TaskDataError(f"Row {index}: column {column!r} is not a JSON list: {text!r}.") from None
            dataset = dataset.remove_columns(column).add_column(column, values)
    return dataset


def as_image_column(dataset, column: str, base_dir: str | os.PathLike | None):
    """An image column as an `Image` feature: decoded images stay, bytes are cast, file paths are made absolute
    (relative ones start at `base_dir`) and must exist. Both casts are `datasets`' own (`Image.cast_storage`)."""
    from datasets import Image, Value

    feature = dataset.features[column]
    if isinstance(feature, Image):
        return dataset
    if is_text(feature):
        paths = [path if base_dir is None or os.path.isabs(path) else os.path.abspath(Path(base_dir) / path)
                 for path in dataset[column]]  # fmt: skip
        missing = [path for path in dict.fromkeys(paths) if not os.path.isfile(path)]
        if missing:
            raise TaskDataError(f"{len(missing)} image file(s) of column {column!r} are missing, e.g. {missing[0]}.")
        dataset = dataset.remove_columns(column).add_column(column, paths)
    elif feature not in (Value("binary"), Value("large_binary")) and not is_image_struct(feature):
        raise TaskDataError(f"Column {column!r} must hold images, image file paths or image bytes, not {feature}.")
    return dataset.cast_column(column, Image())


def is_image_struct(feature) -> bool:
    """`{"bytes": ..., "path": ...}`: how an `Image` column looks once written without its feature type."""
    return isinstance(feature, dict) and set(feature) == {"bytes", "path"}


def check_boxes(dataset, split: str) -> None:
    for image_column, box_column, _ in REGION_COLUMNS:
        if image_column in dataset.column_names and box_column not in dataset.column_names:
            raise TaskDataError(f"Column {image_column!r} needs its boxes in {box_column!r} "
                                "(use [[0, 0, 1, 1]] for the whole image).")  # fmt: skip
        if box_column in dataset.column_names:
            for index, boxes in enumerate(dataset[box_column]):
                problem = box_problem(boxes)
                if problem:
                    raise TaskDataError(f"The {split} split, row {index}, column {box_column!r}: {problem} (got {boxes}).")


def box_problem(boxes) -> str | None:
    """Why a list of boxes is not (R, 4) normalised x1, y1, x2, y2 with R >= 1, x2 > x1, y2 > y1; None if it is."""
    try:
        array = np.asarray(boxes, dtype=np.float64) if boxes is not None else np.zeros((0,))
    except (TypeError, ValueError):
        return "boxes must be a non-empty list of [x1, y1, x2, y2]"
    if array.ndim != 2 or array.shape[1] != 4 or len(array) == 0:
        return "boxes must be a non-empty list of [x1, y1, x2, y2]"
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        return "boxes must be normalised to [0, 1]"
    if (array[:, 2] <= array[:, 0]).any() or (array[:, 3] <= array[:, 1]).any():
        return "a box has x2 <= x1 or y2 <= y1"
    return None


# ============================================================================================== labels


def label_names(splits: dict) -> list[str]:
    """The class names of the `label` column: a `ClassLabel`'s names, the train split's text labels sorted, or "0" ...
    "K-1" for integer ids (K: one more than the largest id of any split)."""
    feature = splits["train"].features["label"]
    if hasattr(feature, "names"):
        return list(feature.names)
    if is_text(feature):
        return sorted(set(splits["train"]["label"]))
    largest = -1
    for split, dataset in splits.items():
        dtype = str(getattr(dataset.features["label"], "dtype", ""))
        if not dtype.startswith(("int", "uint")):
            raise TaskDataError(f"The {split} split's label column holds {dtype or dataset.features['label']}: give "
                                "class names (text) or integer ids.")  # fmt: skip
        labels = dataset["label"]
        if any(label is None or label < 0 for label in labels):
            raise TaskDataError(f"The {split} split has a missing or negative integer label.")
        largest = max(largest, max(labels, default=-1))
    return [str(index) for index in range(largest + 1)]


def encode_labels(dataset, names: list[str]):
    """A text `label` column as `ClassLabel(names=names)` (ids in that order); unknown labels are an error. The cast
    stays in memory: `Dataset.cast` would otherwise write a cache file beside the data, which may be read-only."""
    from datasets import ClassLabel

    if not is_text(dataset.features["label"]):
        return dataset
    unknown = sorted(set(dataset["label"]) - set(names))
    if unknown:
        raise TaskDataError(f"Labels {unknown} are not among the label names {names}.")
    features = dataset.features.copy()
    features["label"] = ClassLabel(names=list(names))
    return dataset.cast(features, keep_in_memory=True)


# ============================================================================================== region features


def add_region_features(dataset, extractor, cache_dir: str | os.PathLike | None = None, batch_size: int = 64):
    """
    Adds each image's (R, D) backbone features (`features`, or `features_left` / `features_right`) with `Dataset.map`,
    written to `<cache_dir>/vlmixer_region_features/<fingerprint>.arrow` (default: the `datasets` cache,
    `HF_DATASETS_CACHE`) and reused from there; never into the data's own folder, which may be read-only. The
    fingerprint is the dataset's with the extractor's backbone and preprocessing. Images are then kept undecoded
    (the collators read the features only). A column of features given by the data is used as it is.
    """
    import datasets
    from datasets.fingerprint import Hasher

    columns = [names for names in REGION_COLUMNS if names[0] in dataset.column_names and names[2] not in dataset.column_names]
    if columns:
        fingerprint = Hasher.hash([dataset._fingerprint, extractor.backbone_id, extractor.preprocessing, columns])
        folder = Path(cache_dir or datasets.config.HF_DATASETS_CACHE) / "vlmixer_region_features"
        folder.mkdir(parents=True, exist_ok=True)
        try:
            dataset = dataset.map(partial(region_features_of_batch, extractor=extractor, columns=columns),
                                  batched=True, batch_size=batch_size, cache_file_name=str(folder / f"{fingerprint}.arrow"),
                                  new_fingerprint=fingerprint, desc="region features")  # fmt: skip
        except (OSError, SyntaxError) as error:  # PIL: unreadable or truncated image data
            raise TaskDataError(f"An image cannot be read: {str(error).strip() or type(error).__name__}") from None
    for image_column, _, _ in REGION_COLUMNS:
        if image_column in dataset.column_names and isinstance(dataset.features[image_column], datasets.Image):
            dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    return dataset


def region_features_of_batch(batch: dict, extractor, columns) -> dict:
    """`Dataset.map` step: the crops of every box of every image in the batch, encoded together."""
    from .processing_vlmixer import crop_region, to_rgb_image

    for image_column, box_column, features_column in columns:
        crops, counts = [], []
        for image, boxes in zip(batch[image_column], batch[box_column]):
            rgb = to_rgb_image(image)
            crops += [crop_region(rgb, box) for box in boxes]
            counts.append(len(boxes))
        features = extractor.encode_crops(crops)
        batch[features_column] = np.split(features, np.cumsum(counts)[:-1])
    return batch


def processor_inputs(row: dict) -> dict:
    """
    A row with region features (`add_region_features`) -> keyword arguments of `VLMixerProcessor`: `text`,
    `region_features` ((R, D) arrays) and `boxes`, one entry per image of the row (two for reasoning rows, left first).
    `processor(**processor_inputs(row))` gives the `[CLS] text [SEP] regions [SEP]` inputs.
    """
    images = [(boxes, features) for image, boxes, features in REGION_COLUMNS if features in row]
    if not images:
        raise TaskDataError(f"The row has no region features ({[f for _, _, f in REGION_COLUMNS]}); it has {list(row)}.")
    if "text" not in row:
        raise TaskDataError(f"The row has no 'text' column; it has {list(row)}.")
    return {
        "text": [row["text"]] * len(images),
        "region_features": [np.asarray(row[features], dtype=np.float32) for _, features in images],
        "boxes": [np.asarray(row[boxes], dtype=np.float32) for boxes, _ in images],
    }


def image_key(image) -> str:
    """What identifies an image of an undecoded `Image` column ({"bytes", "path"}), a path, or a decoded image."""
    if isinstance(image, dict):
        return image.get("path") or hashlib.sha1(image["bytes"]).hexdigest()
    return image if isinstance(image, str) else hashlib.sha1(np.asarray(image).tobytes()).hexdigest()


def retrieval_references(dataset, key_column: str = "objects") -> list[list[int]]:
    """For each row, the rows whose text is also correct for its image: those with the same multiset of `key_column`
    (captions name objects and counts, never places), or the same image when the column is absent."""
    if key_column in dataset.column_names:
        keys = [tuple(sorted(value)) for value in dataset[key_column]]
    else:
        keys = [image_key(image) for image in dataset["image"]]
    groups: dict = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return [groups[key] for key in keys]


__all__ = [
    "LIST_COLUMNS",
    "REGION_COLUMNS",
    "TASKS",
    "TASK_COLUMNS",
    "TaskDataError",
    "add_region_features",
    "box_problem",
    "encode_labels",
    "label_names",
    "prepare_split",
    "processor_inputs",
    "retrieval_references",
]
