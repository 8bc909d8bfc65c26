"""Grounded-word matching on real English sentences: spans, lemmas, boundaries, longest match, hyphens."""

import json

import pytest

from processing.concepts import ConceptVocabulary, normalise_form


@pytest.fixture(scope="module")
def coco() -> ConceptVocabulary:
    return ConceptVocabulary.coco80()


@pytest.fixture(scope="module")
def fashion() -> ConceptVocabulary:
    return ConceptVocabulary.fashion_mnist()


def found(vocabulary: ConceptVocabulary, sentence: str) -> list[tuple[str, str]]:
    matches = vocabulary.find(sentence)
    for match in matches:
        assert sentence[match.start : match.end] == match.text
    starts = [m.start for m in matches]
    assert starts == sorted(starts) and all(a.end <= b.start for a, b in zip(matches, matches[1:]))
    return [(m.text, m.concept) for m in matches]


COCO_SENTENCES = [
    # COCO-caption style
    ("A man riding a wave on top of a surfboard.", [("man", "person"), ("surfboard", "surfboard")]),
    ("Two dogs playing with a frisbee in the park.", [("dogs", "dog"), ("frisbee", "frisbee")]),
    ("A cat sleeping on a laptop keyboard.", [("cat", "cat"), ("laptop", "laptop"), ("keyboard", "keyboard")]),
    ("A teddy bear sitting on a bed next to a book.", [("teddy bear", "teddy bear"), ("bed", "bed"), ("book", "book")]),
    ("A brown bear walking through the tall grass.", [("bear", "bear")]),
    ("A hot dog with mustard on a paper plate.", [("hot dog", "hot dog")]),
    ("A group of people standing around a kitchen table.", [("people", "person"), ("table", "dining table")]),
    ("The giraffes are eating leaves from a tree.", [("giraffes", "giraffe")]),
    ("A red double decker bus driving down the street.", [("bus", "bus")]),
    ("Several sheep grazing in a green field.", [("sheep", "sheep")]),
    ("Three mice ran across the kitchen floor.", [("mice", "mouse")]),
    ("A woman holding an umbrella in the rain.", [("woman", "person"), ("umbrella", "umbrella")]),
    ("A pizza and a glass of wine on a dining table.", [("pizza", "pizza"), ("dining table", "dining table")]),
    ("A slice of cake and a cup of coffee.", [("cake", "cake"), ("cup", "cup")]),
    ("Knives, forks and spoons lie on the counter.", [("Knives", "knife"), ("forks", "fork"), ("spoons", "spoon")]),
    ("A young boy swinging a baseball bat at a ball.", [("boy", "person"), ("baseball bat", "baseball bat"), ("ball", "sports ball")]),
    ("A tennis player swings her tennis racket.", [("tennis racket", "tennis racket")]),
    ("A cell phone lying next to a remote control.", [("cell phone", "cell phone"), ("remote control", "remote")]),
    ("A stop sign at the corner near a fire hydrant.", [("stop sign", "stop sign"), ("fire hydrant", "fire hydrant")]),
    ("An airplane flying over the traffic lights.", [("airplane", "airplane"), ("traffic lights", "traffic light")]),
    ("A bowl of broccoli and carrots.", [("bowl", "bowl"), ("broccoli", "broccoli"), ("carrots", "carrot")]),
    ("A refrigerator, an oven and a microwave in a small kitchen.", [("refrigerator", "refrigerator"), ("oven", "oven"), ("microwave", "microwave")]),
    # case and punctuation
    ("DOGS! Dogs? dogs.", [("DOGS", "dog"), ("Dogs", "dog"), ("dogs", "dog")]),
    ("The kitten (a tabby) chased the dog's ball.", [("kitten", "cat"), ("dog", "dog"), ("ball", "sports ball")]),
    ('"Horse," she said; "horses."', [("Horse", "horse"), ("horses", "horse")]),
    # word boundaries
    ("The category of concatenated strings is not a cat.", [("cat", "cat")]),
    ("Business travellers wait for the buses.", [("buses", "bus")]),
    ("He tied the knot and bought a tie.", [("tie", "tie")]),
    ("Scattered carpets covered the bedroom floor.", []),
    ("The applesauce was tasty, the apple was not.", [("apple", "apple")]),
    # hyphens, synonyms and multi-word names
    ("A teddy-bear and a Teddy Bear.", [("teddy-bear", "teddy bear"), ("Teddy Bear", "teddy bear")]),
    ("A dog-friendly cafe.", [("dog", "dog")]),
    ("A sofa, a couch and two couches.", [("sofa", "couch"), ("couch", "couch"), ("couches", "couch")]),
    ("She dried her hair with a hair dryer.", [("hair dryer", "hair drier")]),
    ("A motorbike parked beside some bikes.", [("motorbike", "motorcycle"), ("bikes", "bicycle")]),
    ("The doughnuts and donuts are on a plate.", [("doughnuts", "donut"), ("donuts", "donut")]),
    # news-like sentences
    ("The government said on Tuesday that the economy grew by 2 percent.", []),
    ("Police said a man was taken to hospital after his car hit a truck.", [("man", "person"), ("car", "car"), ("truck", "truck")]),
    ("Children from the local school planted trees near the train station.", [("Children", "person"), ("train", "train")]),
    # unicode and empty
    ("Un café et un chien: a café with a dog 🐶.", [("dog", "dog")]),
    ("", []),
    ("   ", []),
]


@pytest.mark.parametrize("sentence, expected", COCO_SENTENCES)
def test_coco_grounded_words(coco, sentence, expected):
    assert found(coco, sentence) == expected


FASHION_SENTENCES = [
    ("A white T-shirt with a round neck.", [("T-shirt", "t-shirt")]),
    ("Plain T shirt, cotton tshirt, or three t-shirts.", [("T shirt", "t-shirt"), ("tshirt", "t-shirt"), ("t-shirts", "t-shirt")]),
    ("A blue shirt under a wool coat.", [("shirt", "shirt"), ("coat", "coat")]),
    ("Slim-fit trousers and denim jeans.", [("trousers", "trouser"), ("jeans", "trouser")]),
    ("Summer dresses and leather sandals.", [("dresses", "dress"), ("sandals", "sandal")]),
    ("Black ankle boots and a pair of sneakers.", [("ankle boots", "ankle boot"), ("sneakers", "sneaker")]),
    ("A knitted sweater, a warm pullover and a light jacket.", [("sweater", "pullover"), ("pullover", "pullover"), ("jacket", "coat")]),
    ("She carried a leather bag and a small purse.", [("bag", "bag"), ("purse", "bag")]),
    ("Put it on top of the shelf.", []),
    ("Hiking boots for the mountain.", [("boots", "ankle boot")]),
]


@pytest.mark.parametrize("sentence, expected", FASHION_SENTENCES)
def test_fashion_grounded_words(fashion, sentence, expected):
    assert found(fashion, sentence) == expected


def test_longest_match_wins_over_its_parts(coco):
    assert found(coco, "teddy bear") == [("teddy bear", "teddy bear")]
    assert found(coco, "a tennis ball") == [("tennis ball", "sports ball")]
    assert found(coco, "baseball glove") == [("baseball glove", "baseball glove")]


def test_fashion_mnist_labels_are_class_ids(fashion):
    assert fashion.labels == [
        "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
    ]  # fmt: skip
    assert fashion.label_index["ankle boot"] == 9


def test_coco_has_its_80_categories(coco):
    assert len(coco) == 80 and "teddy bear" in coco and "dog" in coco and "unicorn" not in coco


def test_from_labels_generates_irregular_plurals():
    vocabulary = ConceptVocabulary.from_labels(["goose", "mouse", "dress", "knife", "person"], {"person": ["child"]})
    assert found(vocabulary, "geese, mice, dresses, knives, children") == [
        ("geese", "goose"), ("mice", "mouse"), ("dresses", "dress"), ("knives", "knife"), ("children", "person"),
    ]  # fmt: skip


def test_normalise_form_ignores_case_and_separators():
    assert normalise_form("T-Shirt") == normalise_form("t shirt") == normalise_form("tshirt") == "tshirt"


def test_json_round_trip_keeps_forms_and_order(coco, tmp_path):
    path = tmp_path / "concepts.json"
    coco.to_json(path)
    reloaded = ConceptVocabulary.from_json(path)
    assert reloaded.labels == coco.labels
    assert reloaded.forms("person") == coco.forms("person")
    sentence = COCO_SENTENCES[0][0]
    assert reloaded.find(sentence) == coco.find(sentence)
    assert [p.name for p in tmp_path.iterdir()] == ["concepts.json"]  # no temporary file left behind


def test_atomic_save_keeps_the_old_file_when_writing_fails(coco, tmp_path, monkeypatch):
    path = tmp_path / "concepts.json"
    coco.to_json(path)
    before = path.read_text()
    monkeypatch.setattr(json, "dump", lambda *args, **kwargs: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        ConceptVocabulary({"dog": []}).to_json(path)
    assert path.read_text() == before


@pytest.mark.parametrize(
    "concepts, message",
    [
        ({}, "at least one concept"),
        ({"": ["x"]}, "non-empty string"),
        ({"dog": ["  "]}, "empty surface form"),
        ({"dog": ["hound"], "hound": []}, "claimed by two concepts: 'dog' and 'hound'"),
        ({"t-shirt": [], "t shirt": []}, "claimed by two concepts"),
    ],
)
def test_invalid_vocabularies_are_refused(concepts, message):
    with pytest.raises(ValueError, match=message):
        ConceptVocabulary(concepts)


def test_synonyms_for_unknown_labels_are_refused():
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ConceptVocabulary.from_labels(["dog"], {"cat": ["kitten"]})


def test_not_a_vocabulary_file_is_refused(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"concepts": ["dog"]}')
    with pytest.raises(ValueError, match="Not a concept vocabulary"):
        ConceptVocabulary.from_json(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ConceptVocabulary.from_json(path)


def test_vocabulary_from_a_gallerys_label_set():
    import numpy as np

    from processing import PatchGalleryBuilder

    builder = PatchGalleryBuilder("efficientnet-lite0", 4)
    for concept in ("teddy bear", "goose"):
        builder.add(concept, np.ones((1, 4)), [[0, 0, 1, 1]], [0], [1.0])
    vocabulary = ConceptVocabulary.from_gallery(builder.build())
    assert vocabulary.labels == ["teddy bear", "goose"]
    assert found(vocabulary, "Two teddy bears and three geese.") == [("teddy bears", "teddy bear"), ("geese", "goose")]
