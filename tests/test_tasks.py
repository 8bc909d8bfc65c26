"""The Fashion-MNIST scene tasks (scripts/scene_tasks.py): pixels, wording checked by independent parsers, splits,
seeds, the `datasets` folder they make; and the library's task data step (processing/tasks.py): checked splits, image
columns in every form, region features in the `datasets` cache, processor inputs."""

import json
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlmixer.processing.sources import load_fashion_mnist
from vlmixer.processing.tasks import (
    TaskDataError,
    add_region_features,
    encode_labels,
    label_names,
    prepare_split,
    processor_inputs,
    retrieval_references,
)
from vlmixer.scripts.scene_tasks import (
    CLASS_NAMES,
    CLASSIFICATION_LABELS,
    REASONING_LABELS,
    SCENE_NAMES,
    SPLITS,
    TASKS,
    UNSEEN_PROPERTIES,
    TaskConfig,
    write_tasks,
)
from vlmixer.scripts.checkpointing import staged_directory

from .conftest import REPO_ROOT


TINY = {"scenes": {"train": 12, "validation": 6, "test": 8}, "pool_per_class": {"train": 3, "validation": 2, "test": 2}}
POSITION_WORDS = ("top left", "top right", "bottom left", "bottom right")
NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}


def tiny_tasks(directory: Path, seed: int = 0) -> Path:
    with staged_directory(directory) as root:
        write_tasks(root, TaskConfig(**TINY, seed=seed), progress=False)
    return directory


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory) -> Path:
    return tiny_tasks(tmp_path_factory.mktemp("tasks") / "tasks")


@pytest.fixture(scope="module")
def fashion():
    return {split: load_fashion_mnist(split) for split in ("train", "test")}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def scenes_by_id(root: Path) -> dict[str, dict]:
    return {s["scene_id"]: s for split in SPLITS for s in read_jsonl(root / "scenes" / f"{split}.jsonl")}


# ---------------------------------------------------------------------------------------------- independent parsers

NAMES = {form: name for name, forms in SCENE_NAMES.items() for form in forms}  # "sneakers" -> "sneaker"
NAME_PATTERN = "|".join(sorted(map(re.escape, NAMES), key=len, reverse=True))
COUNTED = re.compile(rf"(?:^|[\s:,])(a|an|one|two|three|four) ({NAME_PATTERN})(?=[\s,.]|$)")
PLACED = re.compile(rf"(?:a|an) ({NAME_PATTERN}) (?:at the|in the) (top left|top right|bottom left|bottom right)")
GROUPS = {"shoe": {"sandal", "sneaker", "ankle boot"}, "shoes": {"sandal", "sneaker", "ankle boot"},
          "item": set(CLASS_NAMES), "items": set(CLASS_NAMES)}  # fmt: skip


def counted_objects(caption: str) -> Counter:
    return Counter({NAMES[name]: NUMBER_WORDS[number] for number, name in COUNTED.findall(caption)})


def count_of(objects: list[str], noun: str) -> int:
    wanted = GROUPS.get(noun, {NAMES.get(noun)})
    return sum(o in wanted for o in objects)


def place_of(scene: dict) -> dict[str, str]:
    return dict(zip(scene["positions"], scene["objects"]))


def answer_name(name: str) -> str:
    return "trousers" if name == "trouser" else name


# ---------------------------------------------------------------------------------------------- scenes


def test_boxes_cover_exactly_the_pasted_images(tasks_dir, fashion):
    for scene in scenes_by_id(tasks_dir).values():
        canvas = np.asarray(Image.open(tasks_dir / "scenes" / scene["image"]))
        assert canvas.shape == (56, 56) and canvas.dtype == np.uint8
        images, labels = fashion[scene["source_split"]]
        covered = np.zeros_like(canvas, dtype=bool)
        for box, source, name in zip(scene["boxes"], scene["sources"], scene["objects"]):
            x0, y0, x1, y1 = (round(v * 56) for v in box)
            assert (x1 - x0, y1 - y0) == (28, 28)
            np.testing.assert_array_equal(canvas[y0:y1, x0:x1], images[source])
            assert CLASS_NAMES[labels[source]] == name
            assert not covered[y0:y1, x0:x1].any(), "boxes overlap"
            covered[y0:y1, x0:x1] = True
        assert not canvas[~covered].any(), "pixels outside the boxes"
        assert 2 <= len(scene["boxes"]) <= 4 and len(set(scene["sources"])) == len(scene["sources"])


def test_image_pools_are_class_balanced_and_disjoint():
    from vlmixer.scripts.scene_tasks import image_pools

    train_labels, test_labels = np.arange(30) % 10, np.arange(20) % 10
    pools = image_pools(train_labels, test_labels, {"train": 2, "validation": 1, "test": 1}, seed=0)
    assert not set(pools["train"]) & set(pools["validation"])
    assert sorted(train_labels[np.concatenate([pools["train"], pools["validation"]])]) == sorted(train_labels)
    assert sorted(test_labels[pools["test"]]) == list(range(10))


def test_splits_never_share_an_image(tasks_dir):
    scenes = scenes_by_id(tasks_dir).values()
    used: dict[str, set] = {split: set() for split in SPLITS}
    for scene in scenes:
        split = scene["scene_id"].split("-")[0]
        assert scene["source_split"] == ("test" if split == "test" else "train")
        assert scene["image"].startswith(f"../images/{split}/")
        used[split] |= set(scene["sources"])
    assert not used["train"] & used["validation"]  # both from Fashion-MNIST train: disjoint pools
    for task in TASKS:
        for split in SPLITS:
            for row in read_jsonl(tasks_dir / task / f"{split}.jsonl"):
                for column in ("image", "image_left", "image_right"):
                    if column in row:
                        assert row[column].startswith(f"../images/{split}/"), (task, split, row[column])


def test_same_seed_same_files_other_seed_other_scenes(tasks_dir, tmp_path):
    again, other = tiny_tasks(tmp_path / "again"), tiny_tasks(tmp_path / "other", seed=1)
    files = sorted(p.relative_to(tasks_dir) for p in tasks_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in files:
        assert (tasks_dir / name).read_bytes() == (again / name).read_bytes(), name
    assert (tasks_dir / "scenes/train.jsonl").read_text() != (other / "scenes/train.jsonl").read_text()


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    with pytest.raises(FileNotFoundError), staged_directory(tmp_path / "out") as root:
        write_tasks(root, TaskConfig(**TINY), fashion_mnist_dir=str(tmp_path / "nowhere"), progress=False)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="overwrite"), staged_directory(tmp_path / "out"):
        pass


# ---------------------------------------------------------------------------------------------- wording


def test_retrieval_and_caption_texts_name_exactly_the_scene_contents(tasks_dir):
    scenes = scenes_by_id(tasks_dir)
    for split in SPLITS:
        for row in read_jsonl(tasks_dir / "retrieval" / f"{split}.jsonl"):
            assert counted_objects(row["text"]) == Counter(row["objects"]), row["text"]
        for row in read_jsonl(tasks_dir / "captioning" / f"{split}.jsonl"):
            scene = scenes[row["scene_id"]]
            assert len(set(row["references"])) == len(row["references"]) == 5 and row["text"] == row["references"][0]
            for caption in row["references"]:
                assert not re.search(r"\ba [aeiou]", caption), caption
                placed = PLACED.findall(caption)
                if placed:
                    assert [(NAMES[n], p) for n, p in placed] == list(zip(scene["objects"], scene["positions"]))
                else:
                    assert counted_objects(caption) == Counter(scene["objects"]), caption
    phrasings = {re.sub(COUNTED, " X", row["text"]) for row in read_jsonl(tasks_dir / "retrieval/train.jsonl")}
    assert len(phrasings) > 3  # varied wording, not one template


def test_vqa_answers_agree_with_the_scenes(tasks_dir):
    scenes = scenes_by_id(tasks_dir)
    vocabulary = json.loads((tasks_dir / "vqa" / "answers.json").read_text())
    for split in SPLITS:
        rows = read_jsonl(tasks_dir / "vqa" / f"{split}.jsonl")
        assert Counter(r["question_type"] for r in rows) == Counter({"count": len(rows) // 3, "exists": len(rows) // 3,
                                                                     "position": len(rows) // 3})  # fmt: skip
        for row in rows:
            scene, question = scenes[row["scene_id"]], row["text"]
            assert row["answers"] == [row["answer"]] and row["scores"] == [1.0] and row["answer"] in vocabulary
            if match := re.fullmatch(rf"how many ({NAME_PATTERN}|items) (?:are there|are in the picture|can you see)\?", question):
                assert row["answer"] == str(count_of(scene["objects"], match[1])), question
            elif match := re.fullmatch(rf"(?:is there (?:a|an) ({NAME_PATTERN})(?: in the picture)?|are there any ({NAME_PATTERN}))\?", question):
                present = count_of(scene["objects"], match[1] or match[2]) > 0
                assert row["answer"] == ("yes" if present else "no"), question
            elif match := re.fullmatch(r"(?:what is at the|what is in the|which item is at the) (top left|top right|bottom left|bottom right)(?: corner)?\?", question):
                name = place_of(scene).get(match[1])
                assert row["answer"] == (answer_name(name) if name else "nothing"), question
            else:
                pytest.fail(f"unexpected question {question!r}")


COUNTABLE = rf"{NAME_PATTERN}|shoes|shoe|items|item"


def reasoning_truth(text: str, left: list[str], right: list[str]) -> bool:
    sides = {"left": left, "right": right}
    if m := re.fullmatch(rf"the (left|right) (\w+) has (more|fewer) ({COUNTABLE}) than the (left|right) \2\.", text):
        a, b = count_of(sides[m[1]], m[4]), count_of(sides[m[5]], m[4])
        return a > b if m[3] == "more" else a < b
    if m := re.fullmatch(rf"both \w+s contain (?:a|an) ({COUNTABLE})\.", text):
        return count_of(left, m[1]) > 0 and count_of(right, m[1]) > 0
    if m := re.fullmatch(rf"neither \w+ contains (?:a|an) ({COUNTABLE})\.", text):
        return count_of(left, m[1]) == 0 and count_of(right, m[1]) == 0
    if m := re.fullmatch(rf"only one of the \w+s contains (?:a|an) ({COUNTABLE})\.", text):
        return (count_of(left, m[1]) > 0) != (count_of(right, m[1]) > 0)
    if m := re.fullmatch(rf"the two \w+s have the same number of ({COUNTABLE})\.", text):
        return count_of(left, m[1]) == count_of(right, m[1])
    if m := re.fullmatch(rf"the (left|right) \w+ has exactly (one|two|three|four) ({COUNTABLE})\.", text):
        return count_of(sides[m[1]], m[3]) == NUMBER_WORDS[m[2]]
    raise AssertionError(f"unexpected statement {text!r}")


def test_reasoning_labels_are_the_statements_truth_and_balanced(tasks_dir):
    for split in SPLITS:
        rows = read_jsonl(tasks_dir / "reasoning" / f"{split}.jsonl")
        assert abs(sum(r["label"] == "true" for r in rows) - len(rows) / 2) <= 0.5
        for row in rows:
            assert row["scene_id_left"] != row["scene_id_right"]
            truth = reasoning_truth(row["text"], row["objects_left"], row["objects_right"])
            assert row["label"] == ("true" if truth else "false"), row["text"]


def entailment_label(text: str, scene: dict) -> str:
    objects, places = scene["objects"], place_of(scene)
    properties = "|".join(map(re.escape, UNSEEN_PROPERTIES))
    if m := re.fullmatch(rf"there is (?:a|an) (?:{properties}) ({NAME_PATTERN}) in the picture\.", text):
        return "neutral" if count_of(objects, m[1]) else "contradiction"
    if m := re.fullmatch(rf"there is (?:a|an) ({NAME_PATTERN}) in the picture\.", text):
        truth = count_of(objects, m[1]) > 0
    elif m := re.fullmatch(rf"there is no ({NAME_PATTERN}) in the picture\.", text):
        truth = count_of(objects, m[1]) == 0
    elif m := re.fullmatch(rf"the picture shows exactly (one|two|three|four) ({NAME_PATTERN})\.", text):
        truth = count_of(objects, m[2]) == NUMBER_WORDS[m[1]]
    elif m := re.fullmatch(rf"there is (?:a|an) ({NAME_PATTERN}) at the ({'|'.join(POSITION_WORDS)})\.", text):
        truth = places.get(m[2]) == NAMES[m[1]]
    elif m := re.fullmatch(rf"the ({'|'.join(POSITION_WORDS)}) of the picture is empty\.", text):
        truth = m[1] not in places
    elif m := re.fullmatch(r"the picture shows (one|two|three|four) items?\.", text):
        truth = len(objects) == NUMBER_WORDS[m[1]]
    else:
        raise AssertionError(f"unexpected statement {text!r}")
    return "entailment" if truth else "contradiction"


def test_classification_labels_follow_from_the_scene_and_are_balanced(tasks_dir):
    scenes = scenes_by_id(tasks_dir)
    for split in SPLITS:
        rows = read_jsonl(tasks_dir / "classification" / f"{split}.jsonl")
        counts = Counter(r["label"] for r in rows)
        assert set(counts) == set(CLASSIFICATION_LABELS) and max(counts.values()) - min(counts.values()) <= 1
        for row in rows:
            assert row["label"] == entailment_label(row["text"], scenes[row["scene_id"]]), row["text"]


def test_tasks_json_lists_files_columns_and_labels(tasks_dir):
    summary = json.loads((tasks_dir / "tasks.json").read_text())
    assert summary["scenes"] == TINY["scenes"] and summary["fashion_mnist_source"]["validation"] == "train"
    for task in TASKS:
        for split in SPLITS:
            rows = read_jsonl(tasks_dir / summary["tasks"][task]["files"][split])
            assert len(rows) == summary["tasks"][task]["rows"][split]
            assert set(summary["tasks"][task]["columns"]) <= set(rows[0])
    assert summary["tasks"]["reasoning"]["label_names"] == list(REASONING_LABELS) == ["false", "true"]


# ---------------------------------------------------------------------------------------------- the datasets folder


def load_split(root: Path, task: str, split: str):
    """A task's split as the fine-tuning scripts read it: `load_dataset(root, task)`, then `prepare_split`."""
    from vlmixer.scripts.finetuning import DataTrainingArguments, load_raw_splits

    arguments = DataTrainingArguments(dataset_name=str(root), dataset_config_name=task)
    raw, folders = load_raw_splits(arguments, str(root.parent / "hf-cache"))
    return prepare_split(raw[split], task, split, folders[split])


def test_each_task_is_a_dataset_configuration_with_its_rows_and_images(tasks_dir):
    from datasets import Image as ImageFeature

    from vlmixer.scripts.finetuning import DataTrainingArguments, load_raw_splits

    for task in TASKS:
        arguments = DataTrainingArguments(dataset_name=str(tasks_dir), dataset_config_name=task)
        loaded, _ = load_raw_splits(arguments, str(tasks_dir.parent / "hf-cache"))
        assert sorted(loaded) == sorted(SPLITS)
        for split in SPLITS:
            assert loaded[split].to_list() == read_jsonl(tasks_dir / task / f"{split}.jsonl"), (task, split)
    validation = load_split(tasks_dir, "classification", "validation")
    assert isinstance(validation.features["image"], ImageFeature)
    scene = scenes_by_id(tasks_dir)[validation[0]["scene_id"]]
    expected = Image.open(tasks_dir / "scenes" / scene["image"])
    np.testing.assert_array_equal(np.asarray(validation[0]["image"]), np.asarray(expected))
    reasoning = load_split(tasks_dir, "reasoning", "test")
    assert isinstance(reasoning.features["image_left"], ImageFeature) and isinstance(reasoning.features["image_right"], ImageFeature)


def test_labels_become_class_ids_in_one_order_for_every_split(tasks_dir):
    splits = {split: load_split(tasks_dir, "classification", split) for split in SPLITS}
    names = label_names(splits)
    assert names == sorted(CLASSIFICATION_LABELS)
    encoded = encode_labels(splits["validation"], names)
    rows = read_jsonl(tasks_dir / "classification" / "validation.jsonl")
    assert [names[i] for i in encoded["label"]] == [r["label"] for r in rows]
    assert encoded.cache_files == []  # cast in memory: no cache file beside the data
    with pytest.raises(TaskDataError, match="maybe"):
        encode_labels(splits["train"].map(lambda row, i: {"label": "maybe" if i == 0 else row["label"]}, with_indices=True), names)
    integers = {split: dataset.remove_columns("label").add_column("label", [i % 2 for i in range(len(dataset))])
                for split, dataset in splits.items()}  # fmt: skip
    assert label_names(integers) == ["0", "1"]


def image_forms(tasks_dir: Path) -> dict:
    """The first rows of the retrieval train split with their image as a path, as bytes, as a decoded Image feature
    and as the {"bytes", "path"} struct an Image column becomes without its feature type."""
    from datasets import Dataset, Image as ImageFeature

    rows = read_jsonl(tasks_dir / "retrieval" / "train.jsonl")[:3]
    paths = [str((tasks_dir / "retrieval" / row["image"]).resolve()) for row in rows]
    with_paths = Dataset.from_list([{**row, "image": path} for row, path in zip(rows, paths)])
    as_bytes = Dataset.from_list([{**row, "image": Path(path).read_bytes()} for row, path in zip(rows, paths)])
    structs = Dataset.from_list([{**row, "image": {"bytes": Path(path).read_bytes(), "path": None}} for row, path in zip(rows, paths)])
    return {"paths": with_paths, "bytes": as_bytes, "decoded": with_paths.cast_column("image", ImageFeature()),
            "structs": structs}  # fmt: skip


def test_an_image_column_may_hold_paths_bytes_or_images(tasks_dir):
    pictures = None
    for form, dataset in image_forms(tasks_dir).items():
        prepared = prepare_split(dataset, "retrieval", "train")
        arrays = [np.asarray(image) for image in prepared["image"]]
        pictures = pictures or arrays
        for got, expected in zip(arrays, pictures):
            np.testing.assert_array_equal(got, expected, err_msg=form)
    from datasets import Dataset

    with pytest.raises(TaskDataError, match="must hold images, image file paths or image bytes"):
        prepare_split(Dataset.from_list([{"image": 3, "boxes": [[0, 0, 1, 1]], "text": "x"}]), "retrieval", "train")


def test_relative_image_paths_start_at_the_data_files_folder(tasks_dir):
    from datasets import Dataset

    rows = read_jsonl(tasks_dir / "vqa" / "train.jsonl")
    prepared = prepare_split(Dataset.from_list(rows), "vqa", "train", tasks_dir / "vqa")
    assert prepared[0]["image"].size == (56, 56)
    with pytest.raises(TaskDataError, match=r"image file\(s\) of column 'image' are missing"):
        prepare_split(Dataset.from_list(rows), "vqa", "train", tasks_dir)


def test_split_checks_name_missing_columns_and_bad_boxes(tasks_dir):
    from datasets import Dataset

    rows = [{**r, "image": str(tasks_dir / "vqa" / r["image"])} for r in read_jsonl(tasks_dir / "vqa" / "train.jsonl")]
    with pytest.raises(TaskDataError, match=r"The train split lacks the column\(s\) \['scores'\]"):
        prepare_split(Dataset.from_list([{k: v for k, v in r.items() if k != "scores"} for r in rows]), "vqa", "train")
    bad_box = [{**r, "boxes": [[0.5, 0.0, 0.2, 1.0]]} if i == 3 else r for i, r in enumerate(rows)]
    with pytest.raises(TaskDataError, match="The test split, row 3, column 'boxes': a box has x2 <= x1"):
        prepare_split(Dataset.from_list(bad_box), "vqa", "test")
    outside = [{**r, "boxes": [[0.0, 0.0, 1.5, 1.0]]} for r in rows]
    with pytest.raises(TaskDataError, match="normalised"):
        prepare_split(Dataset.from_list(outside), "vqa", "train")
    as_csv_text = Dataset.from_list([{**r, **{c: json.dumps(r[c]) for c in ("boxes", "answers", "scores", "objects")}} for r in rows])
    assert prepare_split(as_csv_text, "vqa", "train")["boxes"] == [r["boxes"] for r in rows]
    with pytest.raises(TaskDataError, match="Unknown task"):
        prepare_split(Dataset.from_list(rows), "detection", "train")


def test_retrieval_references_group_scenes_with_the_same_objects(tasks_dir):
    dataset = load_split(tasks_dir, "retrieval", "train")
    references = retrieval_references(dataset)
    for index, correct in enumerate(references):
        assert index in correct
        for other in range(len(dataset)):
            same = Counter(dataset[other]["objects"]) == Counter(dataset[index]["objects"])
            assert (other in correct) == same
    by_image = retrieval_references(dataset.remove_columns("objects"))
    assert all(correct == [index] for index, correct in enumerate(by_image))  # every scene is its own image


# ---------------------------------------------------------------------------------------------- region features


class PixelStatistics:
    """A stand-in backbone: each crop's mean, standard deviation and centre pixel, counting what it encodes."""

    backbone_id, feature_dim = "efficientnet-lite0", 3

    def __init__(self, image_size: int = 112):
        self.encoded = 0
        self.preprocessing = {"image_size": image_size}

    def encode_crops(self, crops):
        self.encoded += len(crops)
        arrays = [np.asarray(c, dtype=np.float32) for c in crops]
        return np.array([[a.mean(), a.std(), a[14, 14, 0]] for a in arrays], dtype=np.float32)


def test_region_features_are_each_regions_crop_cached_by_fingerprint_outside_the_data(tasks_dir, fashion, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tasks_dir, root)
    before = sorted(p for p in root.rglob("*"))
    vqa = load_split(root, "vqa", "train")
    extractor = PixelStatistics()
    with_features = add_region_features(vqa, extractor, tmp_path / "cache")
    regions = sum(len(boxes) for boxes in vqa["boxes"])
    assert extractor.encoded == regions
    row = with_features[4]
    scene = scenes_by_id(root)[row["scene_id"]]
    images = fashion["train"][0]
    expected = PixelStatistics().encode_crops([np.repeat(images[s][..., None], 3, axis=2) for s in scene["sources"]])
    np.testing.assert_allclose(np.asarray(row["features"]), expected, rtol=1e-6)
    assert isinstance(row["image"], dict)  # kept undecoded: the collators read the features
    again = add_region_features(load_split(root, "vqa", "train"), extractor, tmp_path / "cache")
    assert extractor.encoded == regions and again["features"] == with_features["features"]  # from the cache
    add_region_features(vqa, PixelStatistics(image_size=224), tmp_path / "cache")  # other preprocessing: computed
    assert len(list((tmp_path / "cache" / "vlmixer_region_features").glob("*.arrow"))) == 2
    assert sorted(p for p in root.rglob("*")) == before  # nothing written beside the data
    given = with_features.remove_columns("image")
    assert add_region_features(given, extractor, tmp_path / "cache") is given or extractor.encoded == regions


def test_processor_inputs_for_one_and_two_image_rows(tasks_dir, tmp_path, minilm_path):
    from transformers import AutoTokenizer

    from vlmixer.processing import VLMixerProcessor
    from vlmixer.processing.processing_vlmixer import efficientnet_image_processor

    reasoning = add_region_features(load_split(tasks_dir, "reasoning", "validation"), PixelStatistics(), tmp_path)
    classification = add_region_features(load_split(tasks_dir, "classification", "validation"), PixelStatistics(), tmp_path)
    pair = processor_inputs(reasoning[0])
    assert pair["text"] == [reasoning[0]["text"]] * 2
    assert [f.shape for f in pair["region_features"]] == [(len(reasoning[0]["boxes_left"]), 3), (len(reasoning[0]["boxes_right"]), 3)]
    single = processor_inputs(classification[1])
    processor = VLMixerProcessor(AutoTokenizer.from_pretrained(minilm_path), efficientnet_image_processor(64))
    encoded = processor(**single, return_tensors="np")
    regions = len(classification[1]["boxes"])
    np.testing.assert_array_equal(encoded["visual_features"], single["region_features"][0])
    np.testing.assert_allclose(encoded["visual_boxes"], classification[1]["boxes"])
    assert (encoded["input_ids"][0] == processor.image_token_id).sum() == regions
    assert processor(**pair, return_tensors="np")["input_ids"].shape[0] == 2
    with pytest.raises(TaskDataError, match="no 'text'"):
        processor_inputs({"features": single["region_features"][0], "boxes": classification[1]["boxes"]})
    with pytest.raises(TaskDataError, match="no region features"):
        processor_inputs({"text": "x", "boxes": classification[1]["boxes"]})


def test_real_backbone_features_of_a_scene_region_are_those_of_its_fashion_mnist_image(tasks_dir, fashion, tmp_path):
    from vlmixer.processing.features import RegionFeatureExtractor

    extractor = RegionFeatureExtractor("efficientnet-lite0", image_size=112)
    scenes = add_region_features(load_split(tasks_dir, "retrieval", "validation").select(range(1)), extractor, tmp_path)
    scene = scenes_by_id(tasks_dir)[scenes[0]["scene_id"]]
    direct = extractor.encode_crops([fashion["train"][0][s] for s in scene["sources"]])
    np.testing.assert_allclose(np.asarray(scenes[0]["features"]), direct, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- the script


def test_make_tasks_writes_the_folder_and_reports_json_last(tmp_path, capsys):
    from vlmixer.scripts import make_tasks

    with pytest.raises(SystemExit) as help_exit:
        make_tasks.parse_args(["--help"])
    assert help_exit.value.code == 0
    capsys.readouterr()
    arguments = ["--output_dir", str(tmp_path / "tasks"), "--output", str(tmp_path / "figures.json"), "--no_progress",
                 "--train_scenes", "6", "--validation_scenes", "4", "--test_scenes", "4", "--train_pool_per_class", "2",
                 "--validation_pool_per_class", "1", "--test_pool_per_class", "1"]  # fmt: skip
    figures = make_tasks.main(arguments)
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == figures == json.loads((tmp_path / "figures.json").read_text())
    assert figures["rows"]["vqa"] == {"train": 18, "validation": 12, "test": 12}
    assert figures["reasoning_labels_train"] == {"false": 3, "true": 3}
    assert load_split(tmp_path / "tasks", "captioning", "test").num_rows == 4
    with pytest.raises(SystemExit, match="--overwrite"):
        make_tasks.main(arguments)
    left = sorted(p.name for p in tmp_path.iterdir() if p.name != "hf-cache")  # hf-cache: load_split's
    assert left == ["figures.json", "tasks"]  # no staging folder left


def test_zero_shot_script_shares_the_scene_code_without_importing_the_package():
    """Importing `vlmixer.processing` would register the local model classes, and evaluate_zero_shot.py --trust_remote_code
    would then load those instead of the saved folder's code."""
    import subprocess

    code = ("import sys; from vlmixer.scripts import evaluate_zero_shot as e; "
            "print([m for m in sys.modules if m.startswith(('vlmixer.processing', 'vlmixer.modeling_vlmixer'))]); "
            "print(e.make_scenes(__import__('numpy').arange(10), 1, seed=0)[0]['caption'])")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    imported, caption = result.stdout.strip().splitlines()[-2:]
    assert imported == "[]" and caption.startswith("a picture showing ")
