"""Your own data: an `imagefolder` of classes that are not Fashion-MNIST's and a corpus, through the three commands
(build_gallery.py, pretrain.py, evaluate_zero_shot.py), and each wrong turn a clear error."""

import json
from pathlib import Path

import numpy as np
import pytest

from vlmixer.processing import ConceptVocabulary, PatchGallery
from vlmixer.processing.sources import DataError, holdout_split, load_labelled_images

from .conftest import REPO_ROOT
from vlmixer.scripts import build_gallery  # noqa: E402
from vlmixer.scripts import build_vocabulary  # noqa: E402
from vlmixer.scripts import evaluate_zero_shot  # noqa: E402
from vlmixer.scripts import pretrain  # noqa: E402
from vlmixer.scripts import train_sense_model  # noqa: E402
from vlmixer.scripts.train_sense_model import read_labelled  # noqa: E402


CLASSES = ("circle", "square", "Hot_air_balloon")  # the last as a folder name: underscores, capitals


def draw(shape: str, rng: np.random.Generator):
    """A 24 x 24 8-bit RGB picture of `shape` on a plain background."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (24, 24), tuple(int(v) for v in rng.integers(0, 100, 3)))
    pen = ImageDraw.Draw(image)
    low, high = int(rng.integers(2, 6)), int(rng.integers(18, 22))
    colour = tuple(int(v) for v in rng.integers(150, 256, 3))
    if shape == "circle":
        pen.ellipse((low, low, high, high), fill=colour)
    elif shape == "square":
        pen.rectangle((low, low, high, high), fill=colour)
    else:
        pen.ellipse((low, 2, high, 14), fill=colour)
        pen.rectangle((10, 15, 14, 21), fill=colour)
    return image


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """DIR/{train,test}/<class>/*.png: 8 training and 4 test images of each class."""
    root = tmp_path_factory.mktemp("own-images")
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("test", 4)):
        for shape in CLASSES:
            folder = root / split / shape
            folder.mkdir(parents=True)
            for index in range(count):
                draw(shape.lower(), rng).save(folder / f"{index}.png")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("own-corpus") / "corpus.txt"
    sentences = ["The sign had a red circle on it.", "Two squares were painted on the floor.",
                 "A hot air balloon rose over the valley.", "She drew circles and squares.",
                 "The meeting was moved to Thursday.", "Hot air balloons drifted past the hills.",
                 "They met in the square by the old church.", "His social circle was small."] * 10  # fmt: skip
    path.write_text("\n".join(sentences) + "\n")
    return path


@pytest.fixture(scope="module")
def gallery(image_folder, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("own-gallery") / "gallery"
    build_gallery.main(["--dataset_name", str(image_folder), "--split", "train", "--image_size", "32",
                        "--output_dir", str(output)])  # fmt: skip
    return output


@pytest.fixture(scope="module")
def run(gallery, corpus, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("own-run") / "run"
    figures = pretrain.main(["--text_corpus", str(corpus), "--gallery", str(gallery), "--output_dir", str(output),
                             "--max_steps", "2", "--batch_size", "4", "--checkpointing_steps", "100",
                             "--sense_model", "shipped"])  # fmt: skip
    coverage = figures["cmc_coverage"]
    assert coverage["mixable_sentences"] > 0
    # the two sentences that use "square" and "circle" in another sense: kept by the rules, rejected by the model
    assert coverage["sense_check_reasons"] == {"context model": 20}, coverage
    return output


# ---------------------------------------------------------------------------------------------- vocabulary


def test_class_names_become_concepts_with_plurals_numerals_and_alternatives():
    vocabulary = ConceptVocabulary.from_class_names(["Ankle_boot", "T - shirt / top", "7", "two", "cross", "mouse"])
    assert vocabulary.labels == ["ankle boot", "t-shirt", "7", "two", "cross", "mouse"]
    assert {"ankle boots", "ankle boot"} <= set(vocabulary.forms("ankle boot"))
    assert "top" in vocabulary.forms("t-shirt")
    assert set(vocabulary.forms("7")) == {"7", "7s", "seven", "sevens"}
    assert {"two", "twos", "2", "2s"} <= set(vocabulary.forms("two"))  # lemminflect knows no plural of "two"
    assert "crosses" in vocabulary.forms("cross") and "mice" in vocabulary.forms("mouse")
    with pytest.raises(ValueError, match="same concept label"):
        ConceptVocabulary.from_class_names(["Circle", "circle"])


def test_number_words_are_matched_only_where_they_name_the_digit():
    vocabulary = ConceptVocabulary.from_class_names([str(digit) for digit in range(10)])

    def found(text):
        return [(match.text, match.concept) for match in vocabulary.find(text)]

    assert found("One of them was a seven.") == [("seven", "7")]
    assert found("No one wrote the digit 7 today.") == [("7", "7")]
    assert found("Seven people came one day.") == []
    assert found("the seven of us met at 9:30 and paid 5% more") == []
    assert found("She wrote two sevens and a 4, then a one.") == [("sevens", "7"), ("4", "4"), ("one", "1")]
    assert found("the one on the left is mine") == []
    assert found("a slanted handwritten 3 and three 3s") == [("3", "3"), ("3s", "3")]


def test_excluded_phrases_and_the_format_round_trip(tmp_path):
    vocabulary = ConceptVocabulary.from_class_names(["bear", "mouse"], exclude=["bear in mind"])
    assert [(m.start, m.text) for m in vocabulary.find("Bear in mind the mouse.")] == [(17, "mouse")]
    assert [m.text for m in vocabulary.find("A bear in a minute.")] == ["bear"]
    vocabulary.to_json(tmp_path / "concepts.json")
    assert ConceptVocabulary.from_json(tmp_path / "concepts.json") == vocabulary
    assert json.loads((tmp_path / "concepts.json").read_text())["exclude"] == ["bear in mind"]
    numbers = ConceptVocabulary.from_class_names(["6", "7"])  # number classes bring the number idioms
    assert numbers.find("We were at sixes and sevens.") == []
    assert [m.text for m in numbers.find("She drew sixes and sevens.")] == ["sixes", "sevens"]


def matcher_scores(sense_check: bool = True) -> dict[str, tuple[float, float]]:
    """(precision, recall) of `find` (rules, no model) per vocabulary on tests/data/matcher_labelled.jsonl."""
    return train_sense_model.matcher_scores(read_labelled([REPO_ROOT / "tests" / "data" / "matcher_labelled.jsonl"]),
                                            sense_check=sense_check)  # fmt: skip


# (precision, recall) floors: what the matcher reached on the labelled set when it was written, rounded down
MATCHER_FLOOR = {"digits": (0.97, 0.94), "coco80": (0.80, 0.99), "fashion_mnist": (0.65, 0.99), "shapes": (0.73, 0.95)}


def test_matcher_precision_and_recall_on_the_labelled_set():
    scores = matcher_scores()
    for name, (precision, recall) in MATCHER_FLOOR.items():
        assert scores[name][0] >= precision and scores[name][1] >= recall, (name, scores[name])


def test_the_sense_check_raises_precision_where_words_have_other_senses():
    checked, unchecked = matcher_scores(), matcher_scores(sense_check=False)
    for name in ("coco80", "fashion_mnist", "shapes"):
        assert checked[name][0] > unchecked[name][0] + 0.1, (name, checked[name], unchecked[name])
    vocabulary = ConceptVocabulary.coco80()
    rejected = []
    assert vocabulary.find("We will train the model, bear in mind the World Cup is on. Stop at the Cup Inn.", rejected) == []
    assert [reason for *_, reason in rejected] == ["verb", "excluded phrase", "excluded phrase", "name"]
    assert [m.text for m in vocabulary.find("The bear walked past the train at the station.")] == ["bear", "train"]


def test_build_vocabulary_from_names_a_dataset_and_a_bad_synonyms_file(image_folder, tmp_path):
    figures = build_vocabulary.main(["--dataset_name", str(image_folder), "--output", str(tmp_path / "c.json"),
                                     "--exclude", "balloon payment"])  # fmt: skip
    assert figures["labels"] == ["hot air balloon", "circle", "square"]  # ClassLabel order is sorted folder names
    assert ConceptVocabulary.from_json(tmp_path / "c.json").find("a balloon payment") == []
    (tmp_path / "bad.json").write_text('["not", "a", "mapping"]')
    with pytest.raises(SystemExit, match="class name -> list"):
        build_vocabulary.main(["--class_names", "cat", "--synonyms", str(tmp_path / "bad.json"), "--output",
                               str(tmp_path / "x.json")])  # fmt: skip


# ---------------------------------------------------------------------------------------------- data


def test_labelled_images_find_columns_and_name_their_splits(image_folder):
    source = load_labelled_images(str(image_folder), split="train")
    assert (source.image_column, source.label_column) == ("image", "label")
    assert source.class_names == sorted(CLASSES) and len(source.labels) == 24
    assert load_labelled_images(str(image_folder), prefer="train").labels.shape == (24,)
    with pytest.raises(DataError, match=r"has the splits \['train', 'test'\]: choose one with --split"):
        load_labelled_images(str(image_folder))
    with pytest.raises(DataError, match="has no split 'validation'"):
        load_labelled_images(str(image_folder), split="validation")
    with pytest.raises(DataError, match="no column 'photo'"):
        load_labelled_images(str(image_folder), split="train", image_column="photo")


def test_holdout_leaves_images_for_the_prompt_even_when_the_gallery_takes_the_whole_split():
    labels = np.repeat(np.arange(3), [10, 30, 1])
    gallery, held = holdout_split(labels, None, share=0.1, most=100, seed=0)
    assert np.intersect1d(gallery, held).size == 0 and len(gallery) + len(held) == len(labels)
    assert np.bincount(labels[held], minlength=3).tolist() == [1, 3, 0]  # at least one of a class with two or more
    capped, _ = holdout_split(labels, 5, share=0.1, most=100, seed=0)
    assert np.bincount(labels[capped], minlength=3).tolist() == [5, 5, 1]


def test_build_gallery_records_vocabulary_crops_and_heldout(gallery):
    loaded = PatchGallery.load(gallery)
    assert loaded.concepts == ["hot air balloon", "circle", "square"]
    assert loaded.preprocessing["image_size"] == 32 and loaded.preprocessing["image_mean"] == [0.5, 0.5, 0.5]
    vocabulary = ConceptVocabulary.from_json(gallery / "concepts.json")
    assert vocabulary.find("two hot-air balloons")[0].concept == "hot air balloon"
    from safetensors.numpy import load_file

    heldout = load_file(str(gallery / "heldout.safetensors"))
    assert len(heldout["labels"]) == 3 and sorted(heldout["labels"].tolist()) == [0, 1, 2]  # one image per class
    assert np.intersect1d(heldout["image_ids"], np.asarray(loaded.image_ids)).size == 0  # none in the gallery
    assert len(loaded) == 21


def test_class_folders_are_labels_and_a_flat_folder_asks_for_a_tagger(image_folder, tmp_path):
    summary = build_gallery.main(["--image_folder", str(image_folder / "test"), "--image_size", "32",
                                  "--output_dir", str(tmp_path / "g")])  # fmt: skip
    assert summary["concepts"] == 3 and summary["heldout_images"] == 3
    flat = tmp_path / "flat"
    flat.mkdir()
    draw("circle", np.random.default_rng(0)).save(flat / "a.png")
    with pytest.raises(SystemExit):
        build_gallery.main(["--image_folder", str(flat), "--output_dir", str(tmp_path / "g2")])


def test_build_gallery_refuses_classes_the_vocabulary_does_not_name(image_folder, tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"names none of the classes \['Hot_air_balloon', 'circle', 'square'\]"):
        build_gallery.main(["--dataset_name", str(image_folder), "--split", "train", "--vocabulary", "coco80",
                            "--output_dir", str(tmp_path / "g")])  # fmt: skip
    assert not (tmp_path / "g").exists()
    with pytest.raises(SystemExit, match="Cannot load the dataset .*nowhere"):
        build_gallery.main(["--dataset_name", str(image_folder / "nowhere"), "--output_dir", str(tmp_path / "g")])


# ---------------------------------------------------------------------------------------------- pre-training


def test_pretraining_takes_vocabulary_and_crop_size_from_the_gallery(run):
    final = run / "final"
    assert ConceptVocabulary.from_json(final / "concepts.json").labels == ["hot air balloon", "circle", "square"]
    assert json.loads((final / "processor_config.json").read_text())["image_processor"]["crop_size"]["height"] == 32
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "cmc_mixed_share" in header.split(",")


def test_pretraining_refuses_to_run_without_cross_modal_cutmix(gallery, corpus, tmp_path):
    common = ["--gallery", str(gallery), "--max_steps", "2", "--batch_size", "4"]
    with pytest.raises(SystemExit, match="share no concept"):
        pretrain.main(["--text_corpus", str(corpus), "--vocabulary", "fashion_mnist", "--output_dir",
                       str(tmp_path / "a"), *common])  # fmt: skip
    unrelated = tmp_path / "unrelated.txt"
    unrelated.write_text("The meeting was moved to Thursday.\nPrices rose again.\n" * 10)
    with pytest.raises(SystemExit, match="never mix a word"):
        pretrain.main(["--text_corpus", str(unrelated), "--output_dir", str(tmp_path / "b"), *common])
    with pytest.raises(SystemExit, match="differs from the 32 px crops"):
        pretrain.main(["--text_corpus", str(corpus), "--image_size", "224", "--output_dir", str(tmp_path / "c"), *common])


# ---------------------------------------------------------------------------------------------- evaluation


def test_evaluation_on_the_dataset_test_split(run, gallery, image_folder, tmp_path):
    figures = evaluate_zero_shot.main(["--model", str(run / "final"), "--dataset_name", str(image_folder), "--split",
                                       "test", "--probe_gallery", str(gallery), "--cache_dir", str(tmp_path),
                                       "--output", str(tmp_path / "e.json")])  # fmt: skip
    assert figures["test_images"] == 12 and figures["classes"] == 3 and figures["chance"] == pytest.approx(1 / 3, abs=1e-4)
    assert set(figures["per_class_top1"]) == {"circle", "square", "Hot_air_balloon"}
    assert figures["prompt_selection"]["validation_images"] == 3  # the gallery's held-out training images
    assert figures["linear_probe_top1"] >= 0.75  # three plain shapes: the frozen features separate them
    assert "retrieval" not in figures
    assert json.loads((tmp_path / "e.json").read_text())["zero_shot_top1"] == figures["zero_shot_top1"]


def test_evaluation_refuses_classes_the_checkpoint_was_not_trained_with(run, tmp_path):
    other = tmp_path / "other"
    for split in ("test",):
        for name in ("cat", "dog"):
            (other / split / name).mkdir(parents=True)
            draw("circle", np.random.default_rng(1)).save(other / split / name / "0.png")
    with pytest.raises(SystemExit, match=r"test classes \['cat', 'dog'\] are not among them"):
        evaluate_zero_shot.main(["--model", str(run / "final"), "--dataset_name", str(other), "--cache_dir",
                                 str(tmp_path / "cache")])  # fmt: skip
    with pytest.raises(SystemExit, match="--image_size 224 differs"):
        evaluate_zero_shot.main(["--model", str(run / "final"), "--dataset_name", str(other), "--image_size", "224",
                                 "--cache_dir", str(tmp_path / "cache")])  # fmt: skip


def test_a_save_to_disk_dataset_with_an_image_feature_and_string_labels(tmp_path):
    """Not an imagefolder: a `datasets` folder whose labels are plain strings and whose image column is not named
    'image'; the columns are found from the features, the classes from the distinct labels."""
    from datasets import Dataset, Image

    rng = np.random.default_rng(2)
    pictures = [draw(shape, rng) for shape in ("circle", "square") for _ in range(4)]
    paths = []
    for index, picture in enumerate(pictures):
        paths.append(str(tmp_path / f"{index}.png"))
        picture.save(paths[-1])
    dataset = Dataset.from_dict({"picture": paths, "kind": ["circle"] * 4 + ["square"] * 4}).cast_column("picture", Image())
    dataset.save_to_disk(str(tmp_path / "saved"))
    summary = build_gallery.main(["--dataset_name", str(tmp_path / "saved"), "--image_size", "32", "--output_dir",
                                  str(tmp_path / "g")])  # fmt: skip
    assert summary["counts"] == {"circle": 3, "square": 3} and summary["heldout_images"] == 2


def test_the_processor_is_built_without_an_image_processor_for_text(minilm_path):
    from transformers import AutoTokenizer

    from vlmixer.processing import VLMixerProcessor

    processor = VLMixerProcessor(AutoTokenizer.from_pretrained(minilm_path))
    assert processor(text=["a red circle"], cmc_ratio=0.0)["input_ids"].shape == (1, 5)
    assert processor.image_processor.crop_size == {"height": 224, "width": 224}


def test_evaluation_given_the_run_folder_points_to_its_final_model(run, image_folder, tmp_path):
    with pytest.raises(SystemExit, match="holds no model .* Did you mean its final/ folder"):
        evaluate_zero_shot.main(["--model", str(run), "--dataset_name", str(image_folder), "--split", "test",
                                 "--cache_dir", str(tmp_path)])  # fmt: skip


def test_the_shapes_example_is_an_imagefolder_with_a_corpus_the_gallery_vocabulary_reads(tmp_path):
    from vlmixer.scripts import make_example_data

    summary = make_example_data.main(["--example", "shapes", "--output_dir", str(tmp_path / "ex"), "--sentences", "300"])
    source = load_labelled_images(str(tmp_path / "ex" / "images"), split="test")
    assert len(source.class_names) == 10 and len(source.labels) == summary["test_images"]
    vocabulary = ConceptVocabulary.from_class_names(source.class_names)
    lines = (tmp_path / "ex" / "corpus.txt").read_text().splitlines()
    assert len(lines) == 300 and 0.6 < sum(bool(vocabulary.find(line)) for line in lines) / 300 < 0.95
    with pytest.raises(SystemExit):
        make_example_data.main(["--example", "shapes", "--output_dir", str(tmp_path / "ex")])  # not empty
