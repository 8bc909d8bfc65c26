"""Tagging unannotated images for the gallery: the ImageNet head (offline), a detector, and WordNet hypernym naming."""

import json
from pathlib import Path

import pytest
import torch

from vlmixer.processing import ConceptVocabulary
from vlmixer.processing.tagging import (
    ConceptNamer,
    DetectorTagger,
    ImageNetTagger,
    WordNetHypernyms,
    imagenet_classes,
    wordnet_synonyms,
)



skimage_data = pytest.importorskip("skimage.data")
needs_wordnet = pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").exists(), reason="wordnet-base missing")


def test_imagenet_class_names_are_in_classifier_order():
    classes = imagenet_classes()
    assert len(classes) == 1000 and len({c["wnid"] for c in classes}) == 1000
    assert classes[281]["names"][0] == "tabby" and classes[282]["names"] == ["tiger cat"]
    assert classes[967]["names"] == ["espresso"]


@pytest.fixture(scope="module")
def hypernyms():
    if not Path("/usr/share/wordnet/data.noun").exists():
        pytest.skip("wordnet-base is not installed")
    return WordNetHypernyms()


@needs_wordnet
def test_hypernym_chain_of_tabby_goes_through_cat_to_animal(hypernyms):
    chain = [names[0] for names in hypernyms.ancestor_names("n02123045")]
    assert chain[:3] == ["tabby", "domestic cat", "cat"]
    assert chain.index("feline") < chain.index("animal")


@needs_wordnet
def test_imagenet_classes_are_named_by_their_nearest_vocabulary_hypernym(hypernyms):
    namer = ConceptNamer(ConceptVocabulary.shipped("coco80"), hypernyms)
    by_name = {c["names"][0]: c["names"] for c in imagenet_classes()}
    assert namer(by_name["tabby"]) == "cat"
    assert namer(by_name["Siberian husky"]) == "dog"
    assert namer(by_name["moped"]) == "motorcycle"
    assert namer(by_name["orange"]) == "orange"  # named directly
    assert namer(by_name["espresso"]) is None  # no COCO concept above it
    both = ConceptNamer(ConceptVocabulary.from_labels(["bird", "device"]), hypernyms)
    assert both(by_name["goldfinch"]) == "bird" and both(by_name["hook"]) == "device"
    assert both(["crane"]) is None  # two ImageNet classes (bird, machine): whose hypernyms to follow is unknown


def test_without_vocabulary_a_tag_is_its_first_name():
    assert ConceptNamer()(["tabby", "tabby cat"]) == "tabby"


@needs_wordnet
def test_synonyms_come_from_the_words_own_first_sense(hypernyms):
    """nltk's reader over Debian's files, nothing downloaded: the exact word's senses only, not its base form's."""
    assert wordnet_synonyms("Sofa") == ["couch", "lounge"]
    assert wordnet_synonyms("glasses") == ["spectacles", "specs", "eyeglasses"]
    assert wordnet_synonyms("Acinonyx jubatus") == ["cheetah", "chetah"]  # spaces are WordNet's underscores
    assert wordnet_synonyms("star") == []  # its first sense has no other lemma; "ace" is another sense's
    assert wordnet_synonyms("sneakers") == [] and wordnet_synonyms("sneaker") == ["gym shoe", "tennis shoe"]
    assert wordnet_synonyms("no such thing") == []


def test_missing_wordnet_is_a_clear_error(tmp_path):
    for missing in (lambda: WordNetHypernyms(str(tmp_path)), lambda: wordnet_synonyms("sofa", str(tmp_path))):
        with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base") as error:
            missing()
        assert "\n" not in str(error.value)


def test_imagenet_tagger_tags_the_real_cat_photo_and_respects_the_threshold():
    tagger = ImageNetTagger(min_score=0.3, grid_size=2)
    regions = tagger(skimage_data.chelsea())
    assert regions, "the cat photo should be tagged"
    assert all(score >= 0.3 for _, _, score in regions)
    cats = {"tabby", "tiger cat", "Egyptian cat"}
    assert any(names[0] in cats for _, names, _ in regions)
    assert regions[0][0] == (0.0, 0.0, 1.0, 1.0) and regions[0][1][0] in cats  # whole image first
    assert len(ImageNetTagger(min_score=1.0, grid_size=2)(skimage_data.chelsea())) == 0
    with pytest.raises(ValueError, match="min_score"):
        ImageNetTagger(min_score=1.5)


@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory):
    """A randomly initialised YOLOS saved locally: the detector code path, offline."""
    from transformers import YolosConfig, YolosForObjectDetection, YolosImageProcessorPil

    torch.manual_seed(0)
    config = YolosConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         image_size=[64, 64], patch_size=16, num_detection_tokens=5,
                         id2label={0: "cat", 1: "dog"}, label2id={"cat": 0, "dog": 1})  # fmt: skip
    folder = tmp_path_factory.mktemp("tiny-yolos")
    YolosForObjectDetection(config).save_pretrained(folder)
    YolosImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 64}).save_pretrained(folder)
    return str(folder)


def test_detector_tagger_gives_normalised_boxes_above_threshold(tiny_detector):
    regions = DetectorTagger(tiny_detector, min_score=0.0)(skimage_data.chelsea())
    assert regions
    for box, names, score in regions:
        assert 0.0 <= box[0] <= box[2] <= 1.0 and 0.0 <= box[1] <= box[3] <= 1.0
        assert names[0] in ("cat", "dog") and 0.0 <= score <= 1.0
    assert DetectorTagger(tiny_detector, min_score=0.999)(skimage_data.chelsea()) == []


def run_build_gallery(*argv) -> dict:
    from vlmixer.scripts import build_gallery

    return build_gallery.main(list(argv))


@needs_wordnet
def test_build_gallery_from_an_unannotated_folder_with_the_imagenet_tagger(tmp_path):
    from PIL import Image

    from vlmixer.processing import PatchGallery

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea", "coffee", "astronaut"):
        Image.fromarray(getattr(skimage_data, name)()).save(photos / f"{name}.png")
    (photos / "broken.jpg").write_bytes(b"not an image")
    summary = run_build_gallery("--image_folder", str(photos), "--tagger", "imagenet", "--grid_size", "2",
                                "--vocabulary", "coco80", "--output_dir", str(tmp_path / "gallery"))  # fmt: skip
    assert summary["images"] == 3 and summary["skipped"]["corrupt"] == 1
    gallery = PatchGallery.load(tmp_path / "gallery")
    assert gallery.concepts == ["cat"] and gallery.counts["cat"] == summary["counts"]["cat"] >= 3
    assert set(gallery.image_ids.tolist()) == {2}  # chelsea.png: astronaut, broken, chelsea, coffee in name order
    assert json.loads((tmp_path / "gallery" / "gallery.json").read_text())["backbone"] == "efficientnet-lite0"


def test_build_gallery_refuses_a_folder_without_a_tagger(tmp_path):
    with pytest.raises(SystemExit, match="--tagger"):
        run_build_gallery("--image_folder", str(tmp_path), "--output_dir", str(tmp_path / "gallery"))
