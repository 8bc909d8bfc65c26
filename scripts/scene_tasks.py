"""
The example tasks of scripts/make_tasks.py: small real downstream tasks made of Fashion-MNIST *scenes*, written as a
local `datasets` folder (JSON lines, one configuration per task).

A scene is 2 to 4 Fashion-MNIST images pasted into the cells of a 2 x 2 grid of 28-pixel cells: a 56 x 56 grey PNG,
black where a cell is empty. Each pasted image is one region; its box is its cell, normalised (x1, y1, x2, y2), so a
box covers exactly the pixels of one pasted image. Train scenes use Fashion-MNIST training images, validation scenes
other (held-out) training images, test scenes Fashion-MNIST test images: no image is in two splits.

The five tasks share the scenes of a split (`write_tasks` writes them as JSON lines, see `vlmixer.processing.tasks.TASK_COLUMNS`):

- retrieval: a scene and a caption naming its objects with their counts, in varied phrasings;
- vqa: counting, presence and position questions with answer strings, VQA-style soft scores and an answer vocabulary;
- reasoning: two scenes and a statement about both (NLVR2 style), true or false, balanced;
- classification: a scene and a statement, entailment / neutral / contradiction (visual-entailment style; a
  statement is neutral when it gives a present object a property a grey 28-pixel picture cannot show, such as a
  colour or a material), balanced;
- captioning: a scene and several distinct reference captions.

The zero-shot evaluation's side-by-side scenes (`make_scenes`, `scene_caption`) live here too. This file imports
nothing from the vlmixer package at module level (only inside functions), so that scripts/evaluate_zero_shot.py can
run it on its own without `vlmixer.processing` registering the model classes (its --trust_remote_code mode needs that).
"""

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np


CLASS_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
SCENE_NAMES = {  # singular, plural: how captions and statements name each class
    "t-shirt": ("t-shirt", "t-shirts"), "trouser": ("pair of trousers", "pairs of trousers"),
    "pullover": ("pullover", "pullovers"), "dress": ("dress", "dresses"), "coat": ("coat", "coats"),
    "sandal": ("sandal", "sandals"), "shirt": ("shirt", "shirts"), "sneaker": ("sneaker", "sneakers"),
    "bag": ("bag", "bags"), "ankle boot": ("ankle boot", "ankle boots"),
}  # fmt: skip
NUMBERS = {1: "a", 2: "two", 3: "three", 4: "four"}  # the zero-shot captions' counts
COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}

SPLITS = ("train", "validation", "test")
SOURCE_SPLITS = {"train": "train", "validation": "train", "test": "test"}  # Fashion-MNIST split of each task split

GRID_CELLS = 2  # cells per side
CELL_PIXELS = 28
CANVAS_PIXELS = GRID_CELLS * CELL_PIXELS
POSITIONS = ("top left", "top right", "bottom left", "bottom right")  # grid cells, row-major
MAX_OBJECTS = GRID_CELLS * GRID_CELLS


# ============================================================================================== side-by-side scenes


def draw_members(rng: np.random.Generator, pool_size: int, min_objects: int = 2, max_objects: int = 4) -> np.ndarray:
    """`min_objects` to `max_objects` distinct positions in a pool of `pool_size` images."""
    size = int(rng.integers(min_objects, max_objects + 1))
    return rng.choice(pool_size, size=size, replace=False)


def make_scenes(labels: np.ndarray, count: int, seed: int) -> list[dict]:
    """Scenes of 2-4 test images side by side; each with its image indices, boxes and caption."""
    rng = np.random.default_rng(seed)
    scenes = []
    for _ in range(count):
        members = draw_members(rng, len(labels))
        width = 1.0 / len(members)
        boxes = [[i * width, 0.0, (i + 1) * width, 1.0] for i in range(len(members))]
        scenes.append({"members": members, "boxes": boxes, "caption": scene_caption(labels[members])})
    return scenes


def scene_caption(member_labels: np.ndarray) -> str:
    """ "a picture showing two sneakers and a bag." in order of first appearance."""
    counts: dict[str, int] = {}
    for label in member_labels:
        counts[CLASS_NAMES[label]] = counts.get(CLASS_NAMES[label], 0) + 1
    parts = [f"{NUMBERS[n]} {SCENE_NAMES[name][n > 1]}" for name, n in counts.items()]
    return f"a picture showing {join_phrases(parts)}."


# ============================================================================================== grid scenes


def cell_box(cell: int) -> list[float]:
    """The normalised (x1, y1, x2, y2) box of a grid cell (row-major)."""
    row, col = divmod(cell, GRID_CELLS)
    step = 1.0 / GRID_CELLS
    return [col * step, row * step, (col + 1) * step, (row + 1) * step]


@dataclass(frozen=True)
class Scene:
    """Fashion-MNIST images (`sources`, of `source_split`) of classes `classes` pasted in grid `cells` (ascending)."""

    scene_id: str
    split: str
    source_split: str
    sources: tuple[int, ...]
    classes: tuple[int, ...]
    cells: tuple[int, ...]

    @property
    def image_file(self) -> str:
        """The PNG's path relative to the task folder's root."""
        return f"images/{self.split}/{self.scene_id}.png"

    @property
    def objects(self) -> list[str]:
        return [CLASS_NAMES[c] for c in self.classes]

    @property
    def boxes(self) -> list[list[float]]:
        return [cell_box(c) for c in self.cells]

    def count(self, class_ids: Iterable[int]) -> int:
        wanted = set(class_ids)
        return sum(c in wanted for c in self.classes)

    def class_at(self, cell: int) -> int | None:
        return self.classes[self.cells.index(cell)] if cell in self.cells else None


def sample_scenes(split: str, pool: np.ndarray, labels: np.ndarray, count: int, rng: np.random.Generator,
                  min_objects: int = 2, max_objects: int = 4) -> list[Scene]:  # fmt: skip
    """`count` scenes of `split`, each of distinct images from `pool` (indices into a Fashion-MNIST split with
    `labels`) placed in random cells."""
    if not 1 <= min_objects <= max_objects <= MAX_OBJECTS:
        raise ValueError(
            f"Objects per scene must satisfy 1 <= min <= max <= {MAX_OBJECTS}, got {min_objects}, {max_objects}."
        )
    if len(pool) < max_objects:
        raise ValueError(f"The {split} image pool has {len(pool)} images, fewer than {max_objects} objects per scene.")
    scenes = []
    for index in range(count):
        members = pool[draw_members(rng, len(pool), min_objects, max_objects)]
        cells = np.sort(rng.choice(MAX_OBJECTS, size=len(members), replace=False))
        scenes.append(Scene(f"{split}-{index:05d}", split, SOURCE_SPLITS[split], tuple(int(m) for m in members),
                            tuple(int(labels[m]) for m in members), tuple(int(c) for c in cells)))  # fmt: skip
    return scenes


def render_scene(scene: Scene, images: np.ndarray) -> np.ndarray:
    """The (56, 56) uint8 canvas: each source image of `images` (N, 28, 28) in its cell, zeros elsewhere."""
    canvas = np.zeros((CANVAS_PIXELS, CANVAS_PIXELS), dtype=np.uint8)
    for source, cell in zip(scene.sources, scene.cells):
        top, left = (CELL_PIXELS * i for i in divmod(cell, GRID_CELLS))
        canvas[top : top + CELL_PIXELS, left : left + CELL_PIXELS] = images[source]
    return canvas


def image_pools(train_labels: np.ndarray, test_labels: np.ndarray, per_class: dict[str, int], seed: int) -> dict:
    """Class-balanced, disjoint image pools: train and validation from Fashion-MNIST train, test from its test set."""
    from vlmixer.processing.sources import class_balanced_indices

    train = class_balanced_indices(train_labels, per_class["train"], seed)
    held_out = np.setdiff1d(np.arange(len(train_labels)), train)
    validation = held_out[class_balanced_indices(train_labels[held_out], per_class["validation"], seed + 1)]
    test = class_balanced_indices(test_labels, per_class["test"], seed + 2)
    return {"train": train, "validation": validation, "test": test}


# ============================================================================================== wording


def pick(rng: np.random.Generator, options):
    """One element of a sequence, drawn uniformly."""
    return options[int(rng.integers(len(options)))]


def singular(class_id: int) -> str:
    return SCENE_NAMES[CLASS_NAMES[class_id]][0]


def plural(class_id: int) -> str:
    return SCENE_NAMES[CLASS_NAMES[class_id]][1]


def with_article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def count_phrase(class_id: int, count: int, rng: np.random.Generator | None = None) -> str:
    """ "a bag" (or "one bag"), "two sneakers", "an ankle boot"."""
    if count == 1:
        return (
            f"one {singular(class_id)}"
            if rng is not None and rng.random() < 0.25
            else with_article(singular(class_id))
        )
    return f"{COUNT_WORDS[count]} {plural(class_id)}"


def join_phrases(parts: list[str]) -> str:
    """ "x", "x and y", "x, y and z"."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


CAPTION_TEMPLATES = ("{}.", "a picture of {}.", "a photo showing {}.", "an image containing {}.", "a scene with {}.",
                     "{} on a black background.", "a grid of clothes: {}.", "this picture shows {}.")  # fmt: skip
LAYOUT_TEMPLATES = ("{} at the {}", "{} in the {} corner")


def describe_contents(scene: Scene, rng: np.random.Generator) -> str:
    """The objects with their counts, in a random order and template: "a scene with two sneakers and a bag."."""
    counts = Counter(scene.classes)
    order = [list(counts)[i] for i in rng.permutation(len(counts))]
    return pick(rng, CAPTION_TEMPLATES).format(join_phrases([count_phrase(c, counts[c], rng) for c in order]))


def describe_layout(scene: Scene, rng: np.random.Generator) -> str:
    """Each object with its place, in reading order: "a bag at the top left and a coat in the bottom right corner."."""
    template = pick(rng, LAYOUT_TEMPLATES)
    parts = [
        template.format(with_article(singular(c)), POSITIONS[cell]) for c, cell in zip(scene.classes, scene.cells)
    ]
    return join_phrases(parts) + "."


def describe(scene: Scene, rng: np.random.Generator, layout_share: float = 0.0) -> str:
    """A caption: the layout with probability `layout_share`, else the contents."""
    return describe_layout(scene, rng) if rng.random() < layout_share else describe_contents(scene, rng)


def distinct_captions(scene: Scene, rng: np.random.Generator, count: int, layout_share: float) -> list[str]:
    """`count` different captions of a scene (fewer only if its wordings run out)."""
    captions: list[str] = []
    for _ in range(50 * count):
        caption = describe(scene, rng, layout_share)
        if caption not in captions:
            captions.append(caption)
        if len(captions) == count:
            break
    return captions


# ============================================================================================== task rows


def scene_columns(scene: Scene, suffix: str = "") -> dict:
    """The columns that place a scene in a task row: image (relative to the task file's folder), boxes, objects."""
    return {
        f"scene_id{suffix}": scene.scene_id,
        f"image{suffix}": f"../{scene.image_file}",
        f"boxes{suffix}": scene.boxes,
        f"objects{suffix}": scene.objects,
    }


@dataclass
class TaskConfig:
    """What `write_tasks` makes: scenes per split, the image pools they draw from, and rows per scene."""

    scenes: dict[str, int] = field(default_factory=lambda: {"train": 2000, "validation": 300, "test": 500})
    pool_per_class: dict[str, int] = field(default_factory=lambda: {"train": 300, "validation": 50, "test": 80})
    min_objects: int = 2
    max_objects: int = 4
    questions_per_scene: int = 3
    references_per_scene: int = 5
    layout_caption_share: float = 0.3  # captioning references that describe where the objects are
    seed: int = 0

    def check(self) -> None:
        for name in ("scenes", "pool_per_class"):
            sizes = getattr(self, name)
            if set(sizes) != set(SPLITS) or any(not isinstance(n, int) or n < 1 for n in sizes.values()):
                raise ValueError(f"{name} needs a positive integer for each of {SPLITS}, got {sizes}.")
        if self.questions_per_scene < 1 or self.references_per_scene < 1:
            raise ValueError("questions_per_scene and references_per_scene must be at least 1.")
        if not 0.0 <= self.layout_caption_share <= 1.0:
            raise ValueError(f"layout_caption_share must be in [0, 1], got {self.layout_caption_share}.")


def retrieval_rows(scenes: list[Scene], rng: np.random.Generator, config: TaskConfig) -> list[dict]:
    """One caption per scene, naming its objects and counts (never their places)."""
    return [{**scene_columns(s), "text": describe_contents(s, rng)} for s in scenes]


# ---------------------------------------------------------------------------------------------- vqa

QUESTION_TYPES = ("count", "exists", "position")
ANSWER_NAMES = [name if name != "trouser" else "trousers" for name in CLASS_NAMES]  # "what is at the top left?"
ANSWERS = [*(str(n) for n in range(MAX_OBJECTS + 1)), "yes", "no", "nothing", *ANSWER_NAMES]  # the answer vocabulary


def count_question(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    if rng.random() < 0.15:
        return pick(rng, ("how many items are there?", "how many items are in the picture?")), str(len(scene.classes))
    class_id = pick(rng, scene.classes) if rng.random() < 0.8 else int(rng.integers(len(CLASS_NAMES)))
    template = pick(rng, ("how many {} are there?", "how many {} are in the picture?", "how many {} can you see?"))
    return template.format(plural(class_id)), str(scene.count([class_id]))


def exists_question(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """Yes and no equally often."""
    absent = [c for c in range(len(CLASS_NAMES)) if c not in scene.classes]
    class_id = pick(rng, scene.classes) if rng.random() < 0.5 else pick(rng, absent)
    template = pick(rng, ("is there {}?", "is there {} in the picture?", "are there any {}?"))
    noun = plural(class_id) if template.startswith("are") else with_article(singular(class_id))
    return template.format(noun), "yes" if class_id in scene.classes else "no"


def position_question(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    cell = int(rng.integers(MAX_OBJECTS))
    template = pick(rng, ("what is at the {}?", "what is in the {} corner?", "which item is at the {}?"))
    class_id = scene.class_at(cell)
    return template.format(POSITIONS[cell]), "nothing" if class_id is None else ANSWER_NAMES[class_id]


QUESTION_MAKERS = {"count": count_question, "exists": exists_question, "position": position_question}


def vqa_rows(scenes: list[Scene], rng: np.random.Generator, config: TaskConfig) -> list[dict]:
    """`questions_per_scene` different questions per scene, the types in turn; `answers` / `scores` are the VQA soft
    targets (here one answer with score 1.0: every annotator would agree)."""
    rows = []
    for scene in scenes:
        asked: set[str] = set()
        for index in range(config.questions_per_scene):
            question_type = QUESTION_TYPES[index % len(QUESTION_TYPES)]
            for _ in range(20):
                question, answer = QUESTION_MAKERS[question_type](scene, rng)
                if question not in asked:
                    break
            asked.add(question)
            rows.append({**scene_columns(scene), "text": question, "question_type": question_type, "answer": answer,
                         "answers": [answer], "scores": [1.0]})  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------------------- reasoning

SHOES = (5, 7, 9)  # sandal, sneaker, ankle boot


@dataclass(frozen=True)
class Countable:
    """What statements count: a class, shoes, or all items."""

    singular: str
    plural: str
    class_ids: tuple[int, ...]


ITEMS = Countable("item", "items", tuple(range(len(CLASS_NAMES))))
SHOE = Countable("shoe", "shoes", SHOES)


def class_countable(class_id: int) -> Countable:
    return Countable(singular(class_id), plural(class_id), (class_id,))


def count_words(countable: Countable, count: int) -> str:
    return f"{COUNT_WORDS[count]} {countable.singular if count == 1 else countable.plural}"


def choose_countable(rng: np.random.Generator, scenes: tuple[Scene, ...], presence: bool) -> Countable:
    """Mostly a class one of the scenes holds; sometimes shoes, all items (not in presence statements) or any class."""
    draw = rng.random()
    if draw < 0.6:
        return class_countable(pick(rng, [c for s in scenes for c in s.classes]))
    if draw < 0.75:
        return SHOE
    if draw < 0.85 and not presence:
        return ITEMS
    return class_countable(int(rng.integers(len(CLASS_NAMES))))


SCENE_NOUNS = ("scene", "picture", "image")


def comparison_statement(left: Scene, right: Scene, rng: np.random.Generator) -> tuple[str, bool]:
    """ "the left scene has more shoes than the right scene."""
    thing, noun = choose_countable(rng, (left, right), False), pick(rng, SCENE_NOUNS)
    counts = {"left": left.count(thing.class_ids), "right": right.count(thing.class_ids)}
    side = pick(rng, ("left", "right"))
    other = "right" if side == "left" else "left"
    if rng.random() < 0.5:
        return f"the {side} {noun} has more {thing.plural} than the {other} {noun}.", counts[side] > counts[other]
    return f"the {side} {noun} has fewer {thing.plural} than the {other} {noun}.", counts[side] < counts[other]


def presence_statement(left: Scene, right: Scene, rng: np.random.Generator) -> tuple[str, bool]:
    """ "both scenes contain a bag.", "neither picture contains a coat.", "only one of the images contains a shoe."."""
    thing, noun = choose_countable(rng, (left, right), True), pick(rng, SCENE_NOUNS)
    present = [left.count(thing.class_ids) > 0, right.count(thing.class_ids) > 0]
    kind = pick(rng, ("both", "neither", "only one"))
    if kind == "both":
        return f"both {noun}s contain {with_article(thing.singular)}.", all(present)
    if kind == "neither":
        return f"neither {noun} contains {with_article(thing.singular)}.", not any(present)
    return f"only one of the {noun}s contains {with_article(thing.singular)}.", sum(present) == 1


def number_statement(left: Scene, right: Scene, rng: np.random.Generator) -> tuple[str, bool]:
    """ "the two scenes have the same number of items.", "the right picture has exactly two sneakers."."""
    thing, noun = choose_countable(rng, (left, right), False), pick(rng, SCENE_NOUNS)
    counts = {"left": left.count(thing.class_ids), "right": right.count(thing.class_ids)}
    if rng.random() < 0.4:
        return f"the two {noun}s have the same number of {thing.plural}.", counts["left"] == counts["right"]
    side = pick(rng, ("left", "right"))
    number = counts[side] if counts[side] > 0 and rng.random() < 0.5 else int(rng.integers(1, MAX_OBJECTS + 1))
    return f"the {side} {noun} has exactly {count_words(thing, number)}.", counts[side] == number


REASONING_STATEMENTS = (comparison_statement, presence_statement, number_statement)
REASONING_LABELS = ("false", "true")


def pair_statement(left: Scene, right: Scene, rng: np.random.Generator) -> tuple[str, bool]:
    """A statement of a random kind about two scenes, and whether it is true."""
    return pick(rng, REASONING_STATEMENTS)(left, right, rng)  # label ids: 0 false, 1 true (as NLVR2 heads read them)


def true_or_false(make: Callable[[], tuple[str, bool]], wanted: bool, what: str) -> str:
    """A statement from `make` whose truth is `wanted` (drawn again until it is)."""
    for _ in range(1000):
        text, truth = make()
        if truth == wanted:
            return text
    raise RuntimeError(f"Could not draw a {wanted} {what} statement in 1000 tries.")


def reasoning_rows(scenes: list[Scene], rng: np.random.Generator, config: TaskConfig) -> list[dict]:
    """As many pairs of different scenes as scenes, each with a statement; exactly half of them true."""
    if len(scenes) < 2:
        raise ValueError("Visual reasoning needs at least two scenes per split.")
    rows = []
    for index, wanted in enumerate(rng.permutation(np.arange(len(scenes)) % 2).astype(bool)):
        left, right = (scenes[i] for i in rng.choice(len(scenes), size=2, replace=False))
        text = true_or_false(partial(pair_statement, left, right, rng), bool(wanted), "reasoning")
        pair = {**scene_columns(left, "_left"), **scene_columns(right, "_right")}
        label = REASONING_LABELS[int(wanted)]
        rows.append({"id": f"{scenes[0].split}-pair-{index:05d}", **pair, "text": text, "label": label})
    return rows


# ---------------------------------------------------------------------------------------------- classification

CLASSIFICATION_LABELS = ("entailment", "neutral", "contradiction")
# Properties a grey 28-pixel picture cannot show: said of a present object they are neither true nor false.
UNSEEN_PROPERTIES = ("red", "blue", "green", "yellow", "pink", "purple", "orange", "leather", "woollen", "cotton",
                     "silk", "expensive", "second-hand", "brand-new")  # fmt: skip


def fact_statement(scene: Scene, rng: np.random.Generator) -> tuple[str, bool]:
    """A statement about presence, counts, places or the number of items, true or false."""
    kind = pick(rng, ("presence", "absence", "count", "place", "empty", "total"))
    class_id = pick(rng, scene.classes) if rng.random() < 0.6 else int(rng.integers(len(CLASS_NAMES)))
    present = class_id in scene.classes
    if kind == "presence":
        return f"there is {with_article(singular(class_id))} in the picture.", present
    if kind == "absence":
        return f"there is no {singular(class_id)} in the picture.", not present
    if kind == "count":
        number = int(rng.integers(1, MAX_OBJECTS + 1))
        return f"the picture shows exactly {count_words(class_countable(class_id), number)}.", scene.count(
            [class_id]
        ) == number
    cell = int(rng.integers(MAX_OBJECTS))
    if kind == "place":
        return f"there is {with_article(singular(class_id))} at the {POSITIONS[cell]}.", scene.class_at(
            cell
        ) == class_id
    if kind == "empty":
        return f"the {POSITIONS[cell]} of the picture is empty.", scene.class_at(cell) is None
    number = int(rng.integers(1, MAX_OBJECTS + 1))
    return f"the picture shows {count_words(ITEMS, number)}.", len(scene.classes) == number


def property_statement(class_id: int, rng: np.random.Generator) -> str:
    """ "there is a red bag in the picture." (neutral when a bag is there, a contradiction when none is)."""
    return f"there is {with_article(pick(rng, UNSEEN_PROPERTIES) + ' ' + singular(class_id))} in the picture."


def classification_statement(scene: Scene, label: str, rng: np.random.Generator) -> str:
    if label == "neutral":
        return property_statement(pick(rng, scene.classes), rng)
    absent = [c for c in range(len(CLASS_NAMES)) if c not in scene.classes]
    if label == "contradiction" and rng.random() < 0.25:
        return property_statement(pick(rng, absent), rng)
    return true_or_false(lambda: fact_statement(scene, rng), label == "entailment", label)


def classification_rows(scenes: list[Scene], rng: np.random.Generator, config: TaskConfig) -> list[dict]:
    """One statement per scene; the three labels equally often (up to one)."""
    labels = rng.permutation(np.arange(len(scenes)) % len(CLASSIFICATION_LABELS))
    return [{**scene_columns(scene), "text": classification_statement(scene, CLASSIFICATION_LABELS[label], rng),
             "label": CLASSIFICATION_LABELS[label]} for scene, label in zip(scenes, labels)]  # fmt: skip


# ---------------------------------------------------------------------------------------------- captioning


def captioning_rows(scenes: list[Scene], rng: np.random.Generator, config: TaskConfig) -> list[dict]:
    """Distinct reference captions per scene (some say where the objects are); `text` is the first of them."""
    rows = []
    for scene in scenes:
        references = distinct_captions(scene, rng, config.references_per_scene, config.layout_caption_share)
        rows.append({**scene_columns(scene), "text": references[0], "references": references})
    return rows


TASK_ROWS = {"retrieval": retrieval_rows, "vqa": vqa_rows, "reasoning": reasoning_rows,
             "classification": classification_rows, "captioning": captioning_rows}  # fmt: skip
TASKS = tuple(TASK_ROWS)  # in the order of vlmixer.processing.tasks.TASKS
TASK_LABELS = {"reasoning": list(REASONING_LABELS), "classification": list(CLASSIFICATION_LABELS)}


# ============================================================================================== writing


def task_rng(seed: int, split: str, stream: str) -> np.random.Generator:
    """An independent generator per (split, scenes or task): changing one task's size leaves the others unchanged."""
    return np.random.default_rng([seed, SPLITS.index(split), ("scenes", *TASKS).index(stream)])


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
            count += 1
    return count


def scene_record(scene: Scene) -> dict:
    """A scene's full annotation: where its images come from (Fashion-MNIST split and indices) and where they are."""
    return {**scene_columns(scene), "classes": list(scene.classes), "cells": list(scene.cells),
            "positions": [POSITIONS[c] for c in scene.cells], "source_split": scene.source_split,
            "sources": list(scene.sources)}  # fmt: skip


def save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode="L").save(path, format="PNG")


def write_tasks(root: str | os.PathLike, config: TaskConfig | None = None, fashion_mnist_dir: str | None = None,
                progress: bool = True) -> dict:  # fmt: skip
    """
    Writes the scenes (`images/<split>/*.png`, `scenes/<split>.jsonl`), every task's `<task>/<split>.jsonl`, the VQA
    answer vocabulary `vqa/answers.json`, `tasks.json` (settings, columns, label names, row counts) and the dataset
    card README.md (one `datasets` configuration per task) into `root`, which should be empty (use `staged_directory` for an atomic write). Fashion-MNIST is read from
    `fashion_mnist_dir` (default: Debian's /usr/share/datasets/fashion-mnist). Returns the summary in `tasks.json`.
    """
    from tqdm.auto import tqdm

    from vlmixer.processing.sources import FASHION_MNIST_DIR, load_fashion_mnist

    config = config or TaskConfig()
    config.check()
    root = Path(root)
    fashion = {split: load_fashion_mnist(split, fashion_mnist_dir or FASHION_MNIST_DIR) for split in ("train", "test")}
    pools = image_pools(fashion["train"][1], fashion["test"][1], config.pool_per_class, config.seed)
    scenes = {}
    for split in SPLITS:
        labels = fashion[SOURCE_SPLITS[split]][1]
        rng = task_rng(config.seed, split, "scenes")
        scenes[split] = sample_scenes(split, pools[split], labels, config.scenes[split], rng, config.min_objects,
                                      config.max_objects)  # fmt: skip
    with tqdm(total=sum(config.scenes.values()), desc="scenes", disable=not progress) as bar:
        for split in SPLITS:
            images = fashion[SOURCE_SPLITS[split]][0]
            for scene in scenes[split]:
                save_png(render_scene(scene, images), root / scene.image_file)
                bar.update()
            write_jsonl(root / "scenes" / f"{split}.jsonl", map(scene_record, scenes[split]))
    rows = {task: {split: make(scenes[split], task_rng(config.seed, split, task), config) for split in SPLITS}
            for task, make in TASK_ROWS.items()}  # fmt: skip
    for task, splits in rows.items():
        for split, task_rows in splits.items():
            write_jsonl(root / task / f"{split}.jsonl", task_rows)
    (root / "vqa" / "answers.json").write_text(json.dumps(ANSWERS, indent=1) + "\n")
    summary = task_summary(config, scenes, rows)
    (root / "tasks.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_dataset_card(root)
    return summary


def write_dataset_card(root: Path) -> None:
    """README.md whose YAML names one configuration per task with its split files, as a Hub dataset repository with
    configurations does: `datasets.load_dataset(root, "vqa")` loads a task (locally, or once uploaded)."""
    from huggingface_hub import DatasetCard, DatasetCardData

    configs = [{"config_name": task, "data_files": [{"split": split, "path": f"{task}/{split}.jsonl"} for split in SPLITS]}
               for task in TASKS]  # fmt: skip
    data = DatasetCardData(configs=configs, pretty_name="VLMixer Fashion-MNIST scene tasks")
    text = ("# Fashion-MNIST scene tasks\n\nMade by VLMixer's scripts/make_tasks.py; one configuration per task "
            f"({', '.join(TASKS)}); `tasks.json` holds the settings, columns, label names and counts.\n")  # fmt: skip
    DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{text}").save(root / "README.md")


def task_summary(config: TaskConfig, scenes: dict[str, list[Scene]], rows: dict[str, dict[str, list[dict]]]) -> dict:
    """Settings, files, columns, label names and counts of the written tasks."""
    from vlmixer.processing.tasks import TASK_COLUMNS

    used = {split: len({source for scene in scenes[split] for source in scene.sources}) for split in SPLITS}
    tasks = {
        task: {
            "files": {split: f"{task}/{split}.jsonl" for split in SPLITS},
            "columns": list(TASK_COLUMNS[task]),
            "rows": {split: len(rows[task][split]) for split in SPLITS},
        }
        for task in TASKS
    }
    for task, names in TASK_LABELS.items():
        tasks[task]["label_names"] = names
        tasks[task]["label_counts"] = {split: dict(Counter(r["label"] for r in rows[task][split])) for split in SPLITS}
    tasks["vqa"]["answers_file"] = "vqa/answers.json"
    tasks["vqa"]["answer_counts"] = dict(Counter(r["answer"] for r in rows["vqa"]["train"]).most_common())
    return {
        "format_version": 1,
        "config": asdict(config),
        "class_names": CLASS_NAMES,
        "positions": list(POSITIONS),
        "scenes": {split: len(scenes[split]) for split in SPLITS},
        "fashion_mnist_source": {split: SOURCE_SPLITS[split] for split in SPLITS},
        "source_images_used": used,
        "tasks": tasks,
    }
