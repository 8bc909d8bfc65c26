"""Tagging an image-only corpus that has no annotations, for the patch gallery:

- `ImageNetTagger` (offline): the built-in EfficientNet-Lite0's ImageNet head on the whole image and, optionally,
  the cells of a grid; a region is kept when its top class is at least `min_score` likely;
- `DetectorTagger` (online users): any `transformers` object-detection model by name, above a score threshold;
- `WordNetHypernyms`: ImageNet classes are WordNet synsets, so a class a vocabulary does not name ("tabby") is named by
  its nearest hypernym that it does ("cat").
"""

import functools
import io
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .processing_vlmixer import crop_region, grid_boxes, to_rgb_image


IMAGENET_CLASSES_FILE = Path(__file__).parent / "data" / "imagenet1k.json"
WORDNET_DIR = "/usr/share/wordnet"  # Debian's wordnet-base

# A tagged region: normalised (x1, y1, x2, y2) box, the names of its class (synonyms, most common first), a score.
Region = tuple[tuple[float, float, float, float], list[str], float]


def imagenet_classes() -> list[dict]:
    """The 1,000 ImageNet-1k classes in classifier order: {"wnid": "n02123159", "names": ["tiger cat"]}."""
    return json.loads(IMAGENET_CLASSES_FILE.read_text())["classes"]


class ImageNetTagger:
    """Tags the whole image and the cells of a `grid_size` x `grid_size` grid with the EfficientNet-Lite0 ImageNet head."""

    def __init__(self, min_score: float = 0.3, grid_size: int = 0, image_size: int = 224):
        from vlmixer.modeling_vlmixer.efficientnet_lite import efficientnet_lite0_pretrained, preprocess_images

        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"`min_score` is a probability in [0, 1], got {min_score}.")
        self.model = efficientnet_lite0_pretrained()
        for name, tensor in self.model.state_dict().items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise ValueError(f"The EfficientNet-Lite0 weights are damaged: {name} holds NaN or infinite values.")
        self.preprocess = preprocess_images
        self.classes = imagenet_classes()
        self.min_score, self.grid_size, self.image_size = min_score, grid_size, image_size

    @torch.no_grad()
    def __call__(self, image) -> list[Region]:
        rgb = to_rgb_image(image)
        boxes = grid_boxes(self.grid_size) if self.grid_size else [(0.0, 0.0, 1.0, 1.0)]
        crops = [crop_region(rgb, box) for box in boxes]
        probabilities = self.model(self.preprocess(crops, self.image_size)).softmax(dim=-1)
        scores, indices = probabilities.max(dim=-1)
        return [
            (tuple(box), self.classes[index]["names"], float(score))
            for box, score, index in zip(boxes, scores.tolist(), indices.tolist())
            if score >= self.min_score
        ]


class DetectorTagger:
    """Boxes and labels from a `transformers` object-detection model (e.g. "facebook/detr-resnet-50")."""

    def __init__(self, model_name: str, min_score: float = 0.5):
        from transformers import pipeline

        self.detector = pipeline("object-detection", model=model_name)
        self.min_score = min_score

    def __call__(self, image) -> list[Region]:
        rgb = to_rgb_image(image)
        width, height = rgb.size
        regions = []
        for found in self.detector(rgb, threshold=self.min_score):
            box = found["box"]
            normalised = (box["xmin"] / width, box["ymin"] / height, box["xmax"] / width, box["ymax"] / height)
            regions.append((tuple(float(np.clip(v, 0.0, 1.0)) for v in normalised), [found["label"]], float(found["score"])))
        return regions


# Debian's wordnet-base ships WordNet 3.0's dict files without `lexnames`, the first file nltk's reader opens: the 45
# lexicographer file names of WordNet 3.0 (lexnames(5WN)), in file-number order.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body noun.cognition "
    "noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive noun.object "
    "noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape "
    "noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication verb.competition "
    "verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession "
    "verb.social verb.stative verb.weather adj.ppl"
).split()
LEXNAME_POS = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


@functools.lru_cache(maxsize=4)
def open_wordnet(wordnet_dir: str = WORDNET_DIR):
    """
    nltk's WordNet reader over a WordNet 3.0 dict folder (Debian's `wordnet-base`), read in place: nothing is
    downloaded. A missing folder raises FileNotFoundError saying what to install.
    """
    if not (Path(wordnet_dir) / "data.noun").is_file():
        raise FileNotFoundError(
            f"{Path(wordnet_dir) / 'data.noun'} is missing: install WordNet with `apt-get install wordnet-base`, or "
            "pass the folder that holds its dict files."
        )
    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class FolderWordNet(WordNetCorpusReader):
        def open(self, file):
            if file == "lexnames" and not (Path(wordnet_dir) / file).exists():
                lines = (f"{i:02d}\t{name}\t{LEXNAME_POS[name.split('.')[0]]}" for i, name in enumerate(LEXNAMES))
                return io.StringIO("\n".join(lines) + "\n")
            return super().open(file)

        def map_wn(self, version="wordnet"):
            return None  # the ids of other WordNet versions serve multilingual lookups only, from nltk's own download

    if wordnet_dir not in nltk.data.path:
        nltk.data.path.append(wordnet_dir)  # nltk reads corpora only from folders on its data path
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The multilingual functions")  # no Open Multilingual Wordnet: English only
        return FolderWordNet(wordnet_dir, None)


def lemma_names(synset) -> list[str]:
    """A synset's lemmas as words: "Persian_cat" -> "persian cat"."""
    return [name.replace("_", " ").lower() for name in synset.lemma_names()]


def hypernyms_of(synset) -> list:
    """
    What a synset is a kind of ("tabby" -> "domestic cat") or an instance of ("Paris" -> "national capital"), by name:
    nltk keeps a synset's pointers in a set, whose order changes from one process to the next.
    """
    return sorted(synset.hypernyms() + synset.instance_hypernyms())


class WordNetHypernyms:
    """The noun synsets of WordNet 3.0 (Debian `wordnet-base`, through nltk) by ImageNet-style id ("n02123045")."""

    def __init__(self, wordnet_dir: str = WORDNET_DIR):
        self.wordnet = open_wordnet(wordnet_dir)

    def ancestor_names(self, wnid: str) -> Iterator[list[str]]:
        """The lemmas of the synset and of its hypernyms and instance hypernyms, nearest first (breadth-first)."""
        synset = self.wordnet.synset_from_pos_and_offset(wnid[0], int(wnid[1:]))
        for node in [synset, *synset.closure(hypernyms_of)]:
            yield lemma_names(node)


def wordnet_synonyms(name: str, wordnet_dir: str = WORDNET_DIR) -> list[str]:
    """
    The other lemmas of the most frequent noun sense of `name` in WordNet 3.0 (Debian `wordnet-base`): "sofa" ->
    ["couch", "lounge"]; [] for a word WordNet does not know. Only the first sense, so that "star" gives no "ace".
    """
    word = name.strip().lower()
    # nltk also finds the senses of a word's base form ("sneakers" -> "sneaker"): only the word's own senses count.
    senses = open_wordnet(wordnet_dir).synsets(word.replace(" ", "_"), pos="n")
    senses = [synset for synset in senses if word in lemma_names(synset)]
    if not senses:
        return []
    return [lemma for lemma in dict.fromkeys(lemma_names(senses[0])) if lemma != word]


def concept_named(names: list[str], vocabulary) -> str | None:
    """The vocabulary concept that one of `names` names as a whole ("tabby cat" -> None, "cat" -> "cat")."""
    for name in names:
        if name in vocabulary:
            return name
        matches = vocabulary.find(name)
        if len(matches) == 1 and matches[0].start == 0 and matches[0].end == len(name.strip()):
            return matches[0].concept
    return None


def unambiguous_wnids() -> dict[tuple[str, ...], str]:
    """ImageNet class names -> WordNet id, for the names only one class has ("crane" is a bird and a machine: a tag
    saying "crane" cannot tell which hypernyms to follow, so it gets none)."""
    wnids: dict[tuple[str, ...], list[str]] = {}
    for c in imagenet_classes():
        wnids.setdefault(tuple(c["names"]), []).append(c["wnid"])
    return {names: ids[0] for names, ids in wnids.items() if len(ids) == 1}


class ConceptNamer:
    """Maps a tagged region's class names to a vocabulary's concept, through WordNet hypernyms for ImageNet classes."""

    def __init__(self, vocabulary=None, hypernyms: WordNetHypernyms | None = None):
        self.vocabulary, self.hypernyms = vocabulary, hypernyms
        self.wnid_of = unambiguous_wnids() if hypernyms is not None else {}

    def __call__(self, names: list[str]) -> str | None:
        if self.vocabulary is None:
            return names[0]
        concept = concept_named(names, self.vocabulary)
        wnid = self.wnid_of.get(tuple(names))
        if concept is not None or wnid is None:
            return concept
        for names in self.hypernyms.ancestor_names(wnid):
            concept = concept_named(names, self.vocabulary)
            if concept is not None:
                return concept
        return None


__all__ = ["ConceptNamer", "DetectorTagger", "ImageNetTagger", "WordNetHypernyms", "concept_named", "imagenet_classes",
           "open_wordnet", "wordnet_synonyms"]
