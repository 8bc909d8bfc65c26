"""The Fashion-MNIST scene tasks: pixels, wording checked by independent parsers, splits, seeds, loader, feature cache."""

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
    CLASS_NAMES,
    CLASSIFICATION_LABELS,
    REASONING_LABELS,
    SCENE_NAMES,
    SPLITS,
    TASKS,
    UNSEEN_PROPERTIES,
    RegionFeatureCache,
    TaskConfig,
    TaskDataError,
    cache_region_features,
    load_task_split,
    processor_inputs,
    region_cache_path,
    retrieval_references,
    staged_directory,
    write_tasks,
)

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
    from vlmixer.processing.tasks import image_pools

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


# ---------------------------------------------------------------------------------------------- loader


def test_loader_reads_a_task_folder_with_labels_and_absolute_images(tasks_dir):
    dataset = load_task_split(tasks_dir, task="classification", split="validation")
    rows = read_jsonl(tasks_dir / "classification" / "validation.jsonl")
    assert dataset.features["label"].names == list(CLASSIFICATION_LABELS)
    assert [CLASSIFICATION_LABELS[i] for i in dataset["label"]] == [r["label"] for r in rows]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in dataset["image"])
    reasoning = load_task_split(tasks_dir, task="reasoning", split="test")
    assert [REASONING_LABELS[i] for i in reasoning["label"]] == [r["label"] for r in read_jsonl(tasks_dir / "reasoning/test.jsonl")]


def copies_in_other_formats(tasks_dir: Path, folder: Path) -> dict[str, Path]:
    """The classification train split as CSV (lists as JSON text), parquet and a save_to_disk DatasetDict in `folder`,
    image paths still relative to the task folder."""
    import pandas as pd
    from datasets import Dataset, DatasetDict

    rows = read_jsonl(tasks_dir / "classification" / "train.jsonl")
    paths = {"csv": folder / "train.csv", "parquet": folder / "train.parquet", "disk": folder / "disk"}
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    for column in ("boxes", "objects"):
        frame[column] = frame[column].map(json.dumps)
    frame.to_csv(paths["csv"], index=False)
    Dataset.from_list(rows).to_parquet(str(paths["parquet"]))
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(paths["disk"]))
    return paths


@pytest.mark.parametrize("kind", ["csv", "parquet", "disk"])
def test_loader_reads_csv_parquet_and_datasets_folders_alike(tasks_dir, tmp_path, kind):
    paths = copies_in_other_formats(tasks_dir, tmp_path / "copies")
    reference = load_task_split(tasks_dir, task="classification", split="train")
    images = tasks_dir / "classification"  # where the relative image paths start
    dataset = load_task_split(paths[kind], split="train", task="classification", image_root=images,
                              label_names=list(CLASSIFICATION_LABELS))  # fmt: skip
    for column in ("image", "boxes", "objects", "text", "label"):
        assert dataset[column] == reference[column], column
    plain = load_task_split(paths[kind], task="classification", image_root=images)  # no label names: strings stay
    assert plain["label"] == [r["label"] for r in read_jsonl(tasks_dir / "classification" / "train.jsonl")]


def test_loader_names_missing_columns_and_bad_data(tasks_dir, tmp_path):
    rows = [{**r, "image": str(tasks_dir / "vqa" / r["image"])} for r in read_jsonl(tasks_dir / "vqa" / "train.jsonl")]
    data = tmp_path / "broken"
    data.mkdir()

    def write(name, changed_rows):
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in changed_rows))
        return data / name

    without_scores = write("train.jsonl", [{k: v for k, v in r.items() if k != "scores"} for r in rows])
    with pytest.raises(TaskDataError, match=r"lacks the column\(s\) \['scores'\]"):
        load_task_split(without_scores, task="vqa")
    with pytest.raises(TaskDataError, match=r"lacks the column\(s\) \['label_id'\]"):
        load_task_split(without_scores, required_columns=["label_id"])
    without_boxes = write("b.jsonl", [{k: v for k, v in r.items() if k != "boxes"} for r in rows])
    with pytest.raises(TaskDataError, match="'boxes'"):
        load_task_split(without_boxes)
    bad_box = write("c.jsonl", [{**r, "boxes": [[0.5, 0.0, 0.2, 1.0]]} if i == 3 else r for i, r in enumerate(rows)])
    with pytest.raises(TaskDataError, match="Row 3.*x2 <= x1"):
        load_task_split(bad_box)
    missing_image = write("d.jsonl", [{**rows[0], "image": "nowhere.png"}])
    with pytest.raises(TaskDataError, match="missing.*nowhere.png"):
        load_task_split(missing_image)
    labelled = [{**r, "image": str(tasks_dir / "vqa" / r["image"])} for r in read_jsonl(tasks_dir / "classification/train.jsonl")]
    unknown = write("e.jsonl", [{**labelled[0], "label": "maybe"}, *labelled[1:]])
    with pytest.raises(TaskDataError, match="maybe"):
        load_task_split(unknown, label_names=list(CLASSIFICATION_LABELS))
    with pytest.raises(TaskDataError, match="no validation split"):
        load_task_split(data, split="validation")
    with pytest.raises(TaskDataError, match="pass task="):
        load_task_split(tasks_dir)
    with pytest.raises(TaskDataError, match="Unknown task"):
        load_task_split(tasks_dir, task="detection")


def test_retrieval_references_group_scenes_with_the_same_objects(tasks_dir):
    dataset = load_task_split(tasks_dir, task="retrieval", split="train")
    references = retrieval_references(dataset)
    for index, correct in enumerate(references):
        assert index in correct
        for other in range(len(dataset)):
            same = Counter(dataset[other]["objects"]) == Counter(dataset[index]["objects"])
            assert (other in correct) == same


# ---------------------------------------------------------------------------------------------- region features


class PixelStatistics:
    """A stand-in backbone: each crop's mean, standard deviation and centre pixel, counting what it encodes."""

    backbone_id, feature_dim = "efficientnet-lite0", 3

    def __init__(self):
        self.encoded = 0

    def encode_crops(self, crops):
        self.encoded += len(crops)
        arrays = [np.asarray(c, dtype=np.float32) for c in crops]
        return np.array([[a.mean(), a.std(), a[14, 14, 0]] for a in arrays], dtype=np.float32)


def test_feature_cache_computes_each_distinct_crop_once_and_survives_a_move(tasks_dir, fashion, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tasks_dir, root)
    vqa = load_task_split(root, task="vqa", split="train")
    reasoning = load_task_split(root, task="reasoning", split="train")
    extractor = PixelStatistics()
    cache = cache_region_features([vqa, reasoning], root, extractor=extractor, progress=False)
    scenes = scenes_by_id(root)
    train_sources = {s for scene in scenes.values() if scene["scene_id"].startswith("train") for s in scene["sources"]}
    assert extractor.encoded == len(train_sources) == cache.features.shape[0]  # one crop per distinct source image
    assert len(cache) == sum(len(s["boxes"]) for s in scenes.values() if s["scene_id"].startswith("train"))
    again = cache_region_features(vqa, root, extractor=extractor, progress=False)
    assert extractor.encoded == len(train_sources) and len(again) == len(cache)  # nothing recomputed

    moved = tmp_path / "moved"
    root.rename(moved)
    cache = RegionFeatureCache.open(region_cache_path(moved, "efficientnet-lite0", 112))
    row = load_task_split(moved, task="vqa", split="train")[4]
    scene = scenes[row["scene_id"]]
    images = fashion["train"][0]
    expected = PixelStatistics().encode_crops([np.repeat(images[s][..., None], 3, axis=2) for s in scene["sources"]])
    np.testing.assert_array_equal(cache.features_for(row["image"], row["boxes"]), expected)
    with pytest.raises(KeyError, match="not in"):
        cache.features_for(load_task_split(moved, task="vqa", split="test")[0]["image"], [[0, 0, 0.5, 0.5]])


def test_processor_inputs_for_one_and_two_image_rows(tasks_dir, tmp_path, minilm_path):
    from transformers import AutoTokenizer

    from vlmixer.processing import VLMixerProcessor
    from vlmixer.processing.processing_vlmixer import efficientnet_image_processor

    root = tmp_path / "copy"
    shutil.copytree(tasks_dir, root)
    reasoning = load_task_split(root, task="reasoning", split="validation")
    classification = load_task_split(root, task="classification", split="validation")
    cache = cache_region_features([reasoning, classification], root, extractor=PixelStatistics(), progress=False)
    pair = processor_inputs(reasoning[0], cache)
    assert pair["text"] == [reasoning[0]["text"]] * 2
    assert [f.shape for f in pair["region_features"]] == [(len(reasoning[0]["boxes_left"]), 3), (len(reasoning[0]["boxes_right"]), 3)]
    single = processor_inputs(classification[1], cache)
    processor = VLMixerProcessor(AutoTokenizer.from_pretrained(minilm_path), efficientnet_image_processor(64))
    encoded = processor(**single, return_tensors="np")
    regions = len(classification[1]["boxes"])
    np.testing.assert_array_equal(encoded["visual_features"], single["region_features"][0])
    np.testing.assert_allclose(encoded["visual_boxes"], classification[1]["boxes"])
    assert (encoded["input_ids"][0] == processor.image_token_id).sum() == regions
    assert processor(**pair, return_tensors="np")["input_ids"].shape[0] == 2
    with pytest.raises(TaskDataError, match="no 'text'"):
        processor_inputs({"image": classification[1]["image"], "boxes": classification[1]["boxes"]}, cache)


def test_real_backbone_features_of_a_scene_region_are_those_of_its_fashion_mnist_image(tasks_dir, fashion, tmp_path):
    from vlmixer.processing.features import RegionFeatureExtractor

    root = tmp_path / "copy"
    shutil.copytree(tasks_dir, root)
    scenes = load_task_split(root / "scenes", split="validation")
    extractor = RegionFeatureExtractor("efficientnet-lite0", image_size=112)
    cache = cache_region_features(scenes, root, extractor=extractor, progress=False)
    scene = scenes[0]
    direct = extractor.encode_crops([fashion["train"][0][s] for s in scene["sources"]])
    np.testing.assert_allclose(cache.features_for(scene["image"], scene["boxes"]), direct, rtol=1e-5, atol=1e-5)


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
    assert load_task_split(tmp_path / "tasks", task="captioning", split="test").num_rows == 4
    with pytest.raises(SystemExit, match="--overwrite"):
        make_tasks.main(arguments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures.json", "tasks"]  # no staging folder left


def test_zero_shot_script_shares_the_scene_code_without_importing_the_package():
    """Importing `processing` would register the local model classes, and evaluate_zero_shot.py --trust_remote_code
    would then load those instead of the saved folder's code."""
    import subprocess

    code = ("from vlmixer.scripts import evaluate_zero_shot as e; "
            "print([m for m in sys.modules if m.split('.')[0] in ('processing', 'modeling_vlmixer')]); "
            "print(e.make_scenes(__import__('numpy').arange(10), 1, seed=0)[0]['caption'])")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    imported, caption = result.stdout.strip().splitlines()[-2:]
    assert imported == "[]" and caption.startswith("a picture showing ")
