"""Grounded-word matching on real English sentences: spans, lemmas, boundaries, longest match, hyphens; saving."""

import importlib.util
import json
import os
import stat
import sys

import numpy as np
import pytest

from vlmixer.processing import PatchGalleryBuilder
from vlmixer.processing import concepts as concepts_module
from vlmixer.processing.concepts import ConceptMatch, ConceptVocabulary, normalise_form


@pytest.fixture(scope="module")
def coco() -> ConceptVocabulary:
    return ConceptVocabulary.coco80()


@pytest.fixture(scope="module")
def fashion() -> ConceptVocabulary:
    return ConceptVocabulary.fashion_mnist()


def found(vocabulary: ConceptVocabulary, sentence: str) -> list[tuple[str, str]]:
    """(matched text, concept) pairs, after checking each span against the sentence and the order of the spans."""
    matches = vocabulary.find(sentence)
    for match in matches:
        assert isinstance(match, ConceptMatch)
        assert sentence[match.start : match.end] == match.text
    assert all(a.end <= b.start for a, b in zip(matches, matches[1:])), "matches overlap or are out of order"
    return [(match.text, match.concept) for match in matches]


COCO_SENTENCES = {
    # COCO-caption style
    "caption: two concepts": (
        "A man riding a wave on top of a surfboard.",
        [("man", "person"), ("surfboard", "surfboard")],
    ),
    "caption: plural": ("Two dogs playing with a frisbee in the park.", [("dogs", "dog"), ("frisbee", "frisbee")]),
    "caption: three in order": (
        "A cat sleeping on a laptop keyboard.",
        [("cat", "cat"), ("laptop", "laptop"), ("keyboard", "keyboard")],
    ),
    "caption: teddy bear beats bear": (
        "A teddy bear sitting on a bed next to a book.",
        [("teddy bear", "teddy bear"), ("bed", "bed"), ("book", "book")],
    ),
    "caption: bear alone": ("A brown bear walking through the tall grass.", [("bear", "bear")]),
    "caption: hot dog beats dog": ("A hot dog with mustard on a paper plate.", [("hot dog", "hot dog")]),
    "caption: synonym table": (
        "A group of people standing around a kitchen table.",
        [("people", "person"), ("table", "dining table")],
    ),
    "caption: dining table beats table": (
        "A pizza and a glass of wine on a dining table.",
        [("pizza", "pizza"), ("dining table", "dining table")],
    ),
    "caption: bus": ("A red double decker bus driving down the street.", [("bus", "bus")]),
    "caption: irregular sheep": ("Several sheep grazing in a green field.", [("sheep", "sheep")]),
    "caption: irregular mice": ("Three mice ran across the kitchen floor.", [("mice", "mouse")]),
    "caption: irregular knives": (
        "Knives, forks and spoons lie on the counter.",
        [("Knives", "knife"), ("forks", "fork"), ("spoons", "spoon")],
    ),
    "caption: multi-word + synonym": (
        "A young boy swinging a baseball bat at a ball.",
        [("boy", "person"), ("baseball bat", "baseball bat"), ("ball", "sports ball")],
    ),
    "caption: remote control": (
        "A cell phone lying next to a remote control.",
        [("cell phone", "cell phone"), ("remote control", "remote")],
    ),
    "caption: two multi-word": (
        "A stop sign at the corner near a fire hydrant.",
        [("stop sign", "stop sign"), ("fire hydrant", "fire hydrant")],
    ),
    "caption: multi-word plural": (
        "An airplane flying over the traffic lights.",
        [("airplane", "airplane"), ("traffic lights", "traffic light")],
    ),
    "caption: kitchen": (
        "A refrigerator, an oven and a microwave in a small kitchen.",
        [("refrigerator", "refrigerator"), ("oven", "oven"), ("microwave", "microwave")],
    ),
    "caption: label with an s": (
        "She bought a toothbrush, scissors and a hair-dryer.",
        [("toothbrush", "toothbrush"), ("scissors", "scissors"), ("hair-dryer", "hair drier")],
    ),
    "caption: ski and skis": ("The skier lost one ski; her skis were new.", [("ski", "skis"), ("skis", "skis")]),
    # case and punctuation
    "case and punctuation": ("DOGS! Dogs? dogs.", [("DOGS", "dog"), ("Dogs", "dog"), ("dogs", "dog")]),
    "brackets and possessive": (
        "The kitten (a tabby) chased the dog's ball.",
        [("kitten", "cat"), ("dog", "dog"), ("ball", "sports ball")],
    ),
    "quotes": ('"Horse," she said; \'horses.\'', [("Horse", "horse"), ("horses", "horse")]),
    "possessives": (
        "The children's bikes, the dogs' bowls and the cat\u2019s cradle.",
        [("children", "person"), ("bikes", "bicycle"), ("dogs", "dog"), ("bowls", "bowl"), ("cat", "cat")],
    ),
    "whitespace between words": ("Kittens\nand puppies\tplay.", [("Kittens", "cat"), ("puppies", "dog")]),
    # word boundaries
    "category, concatenate": ("The category of concatenated strings is not a cat.", [("cat", "cat")]),
    "cattle is a cow, not a cat": (
        "A herd of cattle and a cat near the catwalk.",
        [("cattle", "cow"), ("cat", "cat")],
    ),
    "business": ("Business travellers wait for the buses.", [("buses", "bus")]),
    "tied": ("He tied the knot and bought a tie.", [("tie", "tie")]),
    "scattered, bedroom": ("Scattered carpets covered the bedroom floor.", []),
    "applesauce": ("The applesauce was tasty, the apple was not.", [("apple", "apple")]),
    "o'clock holds no clock": ("It's 5 o'clock and the clock on the wall is slow.", [("clock", "clock")]),
    # hyphen and space variants
    "teddy-bear": ("A teddy-bear and a Teddy Bear.", [("teddy-bear", "teddy bear"), ("Teddy Bear", "teddy bear")]),
    "hot dog spellings": (
        "The hot-dog stand sells hotdogs and Hot Dogs.",
        [("hot-dog", "hot dog"), ("hotdogs", "hot dog"), ("Hot Dogs", "hot dog")],
    ),
    "cell phone spellings": (
        "Her cell-phone, his cellphone and their Cell Phones.",
        [("cell-phone", "cell phone"), ("cellphone", "cell phone"), ("Cell Phones", "cell phone")],
    ),
    "wine glass spellings": (
        "The wineglass and two wine-glasses.",
        [("wineglass", "wine glass"), ("wine-glasses", "wine glass")],
    ),
    "head of a compound matches": ("A fire-truck and an e-bike.", [("truck", "truck"), ("bike", "bicycle")]),
    "modifier of a compound does not": ("A dog-friendly cafe by a man-made lake, cup-shaped.", []),
    "orange-red is a colour": ("She peeled orange-red oranges.", [("oranges", "orange")]),
    "tie-dye is no tie": ("He wore tie-dye and two ties.", [("ties", "tie")]),
    # synonyms
    "sofa and couch": (
        "A sofa, a couch and two couches.",
        [("sofa", "couch"), ("couch", "couch"), ("couches", "couch")],
    ),
    "hair dryer": ("She dried her hair with a hair dryer.", [("hair dryer", "hair drier")]),
    "motorbike is not a bike": (
        "A motorbike parked beside some bikes.",
        [("motorbike", "motorcycle"), ("bikes", "bicycle")],
    ),
    "doughnut": ("The doughnuts and donuts are on a plate.", [("doughnuts", "donut"), ("donuts", "donut")]),
    # news-like sentences
    "news: no concept": ("The government said on Tuesday that the economy grew by 2 percent.", []),
    "news: three": (
        "Police said a man was taken to hospital after his car hit a truck.",
        [("man", "person"), ("car", "car"), ("truck", "truck")],
    ),
    "news: capitalised plural": (
        "Children from the local school planted trees near the train station.",
        [("Children", "person")],  # "train" only modifies "station" there: the sense check drops it (issue 17)
    ),
    "news: the train itself": (
        "Children waved at the train as it left the station.",
        [("Children", "person"), ("train", "train")],
    ),
    "news: women and television": (
        "More women than men watched the debate on television, the survey found.",
        [("women", "person"), ("men", "person"), ("television", "tv")],
    ),
    # unicode, empty
    "unicode around": ("Un café et un chien: a café with a dog \U0001f436.", [("dog", "dog")]),
    "unicode that lower-cases to two characters": (
        "\u0130zmir'de bir k\u00f6pek: a DOG in \u0130zmir, a cat in \u00dcr\u00fcmqi.",
        [("DOG", "dog"), ("cat", "cat")],
    ),
    "empty": ("", []),
    "blank": ("   ", []),
}


@pytest.mark.parametrize("sentence, expected", COCO_SENTENCES.values(), ids=COCO_SENTENCES.keys())
def test_coco_grounded_words(coco, sentence, expected):
    assert found(coco, sentence) == expected


FASHION_SENTENCES = {
    "t-shirt, not shirt": ("A white T-shirt with a round neck.", [("T-shirt", "t-shirt")]),
    "t-shirt spellings": (
        "Plain T shirt, cotton tshirt, a TSHIRT, a tee-shirt or three t-shirts.",
        [("T shirt", "t-shirt"), ("tshirt", "t-shirt"), ("TSHIRT", "t-shirt"), ("tee-shirt", "t-shirt"),
         ("t-shirts", "t-shirt")],
    ),  # fmt: skip
    "shirt and coat": ("A blue shirt under a wool coat.", [("shirt", "shirt"), ("coat", "coat")]),
    "sweatshirt is a pullover, overshirt nothing": (
        "Sweatshirt, overshirt or shirt?",
        [("Sweatshirt", "pullover"), ("shirt", "shirt")],
    ),
    "t-shirt dress: the head counts": ("A striped T-shirt-dress.", [("dress", "dress")]),
    "trousers": ("Slim-fit trousers and denim jeans.", [("trousers", "trouser"), ("jeans", "trouser")]),
    "plural dresses": ("Summer dresses and leather sandals.", [("dresses", "dress"), ("sandals", "sandal")]),
    "ankle boots beat boots": (
        "Black ankle boots and a pair of sneakers.",
        [("ankle boots", "ankle boot"), ("sneakers", "sneaker")],
    ),
    "pullover synonyms": (
        "A knitted sweater, a warm pullover and a light jacket.",
        [("sweater", "pullover"), ("pullover", "pullover"), ("jacket", "coat")],
    ),
    "bag synonyms": ("She carried a leather bag and a small purse.", [("bag", "bag"), ("purse", "bag")]),
    "top is not a t-shirt": ("Put it on top of the shelf, next to the cropped top.", []),
    "boots": ("Hiking boots for the mountain.", [("boots", "ankle boot")]),
    "product description": (
        "Relaxed-fit hoodie-style pullover in soft cotton jersey; pair it with slim pants and running shoes.",
        [("pullover", "pullover"), ("pants", "trouser"), ("running shoes", "sneaker")],
    ),
    "product description with flip-flops": (
        "Beach essentials: flip-flops, a canvas tote and a linen shirt.",
        [("flip-flops", "sandal"), ("tote", "bag"), ("shirt", "shirt")],
    ),
}


@pytest.mark.parametrize("sentence, expected", FASHION_SENTENCES.values(), ids=FASHION_SENTENCES.keys())
def test_fashion_grounded_words(fashion, sentence, expected):
    assert found(fashion, sentence) == expected


def test_match_spans_are_exact_positions(coco):
    sentence = "At noon, two Zebras and a giraffe."
    assert coco.find(sentence) == [ConceptMatch(13, 19, "zebra", "Zebras"), ConceptMatch(26, 33, "giraffe", "giraffe")]


def test_longest_match_wins_over_its_parts(coco):
    assert found(coco, "teddy bear") == [("teddy bear", "teddy bear")]
    assert found(coco, "a tennis ball") == [("tennis ball", "sports ball")]
    assert found(coco, "a baseball glove") == [("baseball glove", "baseball glove")]


def test_fashion_mnist_labels_are_class_ids(fashion):
    assert fashion.labels == [
        "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
    ]  # fmt: skip
    assert [fashion.label_index[label] for label in fashion.labels] == list(range(10))


def test_fashion_mnist_order_is_stored_explicitly():
    data = json.loads((concepts_module.DATA_DIR / "fashion_mnist.json").read_text())
    assert data["labels"] == list(data["concepts"]) and data["labels"][0] == "t-shirt" and data["labels"][9] == "ankle boot"


def test_coco_has_its_80_categories(coco):
    assert len(coco) == 80 and coco.labels[0] == "person" and coco.labels[-1] == "toothbrush"
    assert "teddy bear" in coco and "dog" in coco and "unicorn" not in coco and "dogs" not in coco


def test_forms_start_with_the_label(coco, fashion):
    assert coco.forms("mouse") == ["mouse", "mice"]
    assert fashion.forms("t-shirt")[0] == "t-shirt"
    with pytest.raises(KeyError, match="unicorn"):
        coco.forms("unicorn")


def test_from_labels_generates_irregular_plurals():
    vocabulary = ConceptVocabulary.from_labels(
        ["goose", "mouse", "dress", "knife", "person", "sheep", "teddy bear"], {"person": ["child"]}
    )
    assert found(vocabulary, "geese, mice, dresses, knives, children, people, sheep, teddy bears") == [
        ("geese", "goose"), ("mice", "mouse"), ("dresses", "dress"), ("knives", "knife"), ("children", "person"),
        ("people", "person"), ("sheep", "sheep"), ("teddy bears", "teddy bear"),
    ]  # fmt: skip
    assert "teddy bears" in vocabulary.forms("teddy bear") and "geese" in vocabulary.forms("goose")


def test_from_labels_keeps_hyphens_and_inflects_the_last_word():
    vocabulary = ConceptVocabulary.from_labels(["t-shirt"], {"t-shirt": ["tee"]})
    assert vocabulary.forms("t-shirt") == ["t-shirt", "t-shirts", "tee", "tees"]


def test_vocabulary_from_a_gallerys_label_set():
    builder = PatchGalleryBuilder("efficientnet-lite0", 4)
    for concept in ("teddy bear", "goose"):
        builder.add(concept, np.ones((1, 4)), [[0, 0, 1, 1]], [0], [1.0])
    vocabulary = ConceptVocabulary.from_gallery(builder.build())
    assert vocabulary.labels == ["teddy bear", "goose"]
    assert found(vocabulary, "Two teddy bears and three geese.") == [("teddy bears", "teddy bear"), ("geese", "goose")]


def test_normalise_form_ignores_case_and_separators():
    assert normalise_form("T-Shirt") == normalise_form("t shirt") == normalise_form("TSHIRT") == "tshirt"
    assert normalise_form("  Teddy \u2010 Bear ") == "teddybear"


def test_forms_are_stored_clean_and_found_in_any_case():
    vocabulary = ConceptVocabulary({"Teddy Bear": ["  Teddy   Bears ", "TEDDY-BEAR"], "caf\u00e9": ["caf\u00e9s"]})
    assert vocabulary.forms("Teddy Bear") == ["teddy bear", "teddy bears", "teddy-bear"]
    assert found(vocabulary, "Two CAF\u00c9S and a teddybear.") == [("CAF\u00c9S", "caf\u00e9"), ("teddybear", "Teddy Bear")]


def test_json_round_trip_keeps_forms_and_order(coco, tmp_path):
    path = tmp_path / "concepts.json"
    coco.to_json(path)
    reloaded = ConceptVocabulary.from_json(path)
    assert reloaded == coco and reloaded.labels == coco.labels
    sentence = "A woman holding an umbrella next to a fire hydrant."
    assert reloaded.find(sentence) == coco.find(sentence) != []
    saved = json.loads(path.read_text())
    assert saved["format_version"] == 1 and saved["labels"] == coco.labels
    assert saved["concepts"]["mouse"] == ["mouse", "mice"]


def test_from_dict_follows_the_labels_list():
    vocabulary = ConceptVocabulary.from_dict(
        {"format_version": 1, "labels": ["cat", "dog"], "concepts": {"dog": ["dogs"], "cat": ["cats"]}}
    )
    assert vocabulary.labels == ["cat", "dog"] and vocabulary.label_index["dog"] == 1


def test_atomic_save_leaves_only_the_file(tmp_path, monkeypatch):
    path = tmp_path / "concepts.json"
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append((src, dst)), real_replace(src, dst)))
    ConceptVocabulary({"dog": ["dogs"]}).to_json(path)
    (source, target), = replaced  # fmt: skip
    assert os.path.dirname(source) == str(tmp_path) and target == path  # renamed within the folder
    assert [p.name for p in tmp_path.iterdir()] == ["concepts.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_atomic_save_keeps_the_old_file_when_writing_fails(coco, tmp_path, monkeypatch):
    path = tmp_path / "concepts.json"
    coco.to_json(path)
    before = path.read_text()

    def full_disk(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", full_disk)
    with pytest.raises(OSError, match="disk full"):
        ConceptVocabulary({"dog": []}).to_json(path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["concepts.json"]  # the temporary file is cleaned up


@pytest.mark.parametrize(
    "concepts, message",
    [
        ({}, "at least one concept"),
        ({"": ["x"]}, "non-empty string, got ''"),
        ({"   ": []}, "non-empty string"),
        ({"dog": ["  "]}, "'dog' has an empty surface form"),
        ({"dog": ["-"]}, "'dog' has an empty surface form"),
        ({"dog": "dogs"}, "must be a list of strings"),
        ({"dog": ["hound"], "hound": []}, "'hound' is claimed by two concepts: 'dog' and 'hound'"),
        ({"t-shirt": [], "tee": ["T shirt"]}, "'T shirt' is claimed by two concepts: 't-shirt' and 'tee'"),
        ({"Dog": [], "dog": []}, "claimed by two concepts: 'Dog' and 'dog'"),
    ],
)
def test_invalid_vocabularies_are_refused(concepts, message):
    with pytest.raises(ValueError, match=message):
        ConceptVocabulary(concepts)


def test_synonyms_for_unknown_labels_are_refused():
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ConceptVocabulary.from_labels(["dog"], {"cat": ["kitten"]})


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"concepts": ["dog"]}', "Not a concept vocabulary"),
        ('{"format_version": 2, "concepts": {"dog": []}}', "Unsupported .* format_version 2"),
        ('{"format_version": 1, "labels": ["cat"], "concepts": {"dog": []}}', "name each concept exactly once"),
        ("{not json", "not valid JSON"),
    ],
)
def test_not_a_vocabulary_file_is_refused(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        ConceptVocabulary.from_json(path)


def test_shipped_vocabulary_missing_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(concepts_module, "DATA_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="from_json"):
        ConceptVocabulary.coco80()


def test_module_stands_alone_without_lemminflect(tmp_path, monkeypatch):
    """As remote code: loaded from its file, with no package around it and lemminflect missing."""
    monkeypatch.setitem(sys.modules, "lemminflect", None)
    spec = importlib.util.spec_from_file_location("standalone_concepts", concepts_module.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = tmp_path / "concepts.json"
    ConceptVocabulary({"dog": ["dogs"]}).to_json(path)
    assert [m.concept for m in module.ConceptVocabulary.from_json(path).find("Dogs!")] == ["dog"]
    with pytest.raises(ImportError, match="pip install lemminflect"):
        module.ConceptVocabulary.from_labels(["dog"])
