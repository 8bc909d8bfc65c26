"""Tagging an image-only corpus that has no annotations, for the patch gallery:

- `ImageNetTagger` (offline): the built-in EfficientNet-Lite0's ImageNet head on the whole image and, optionally,
  the cells of a grid; a region is kept when its top class is at least `min_score` likely;
- `DetectorTagger` (online users): any `transformers` object-detection model by name, above a score threshold;
- `WordNetHypernyms`: ImageNet classes are WordNet synsets, so a class a vocabulary does not name ("tabby") is named by
  its nearest hypernym that it does ("cat").
"""

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .processing_vlmixer import crop_region, grid_boxes, to_rgb_image


IMAGENET_CLASSES_FILE = Path(__file__).parent / "data" / "imagenet1k.json"
WORDNET_NOUNS = "/usr/share/wordnet/data.noun"

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


class WordNetHypernyms:
    """Noun synsets of WordNet 3.0 (Debian `wordnet-base`): their lemmas and hypernyms, by ImageNet-style id."""

    def __init__(self, data_noun: str = WORDNET_NOUNS):
        if not Path(data_noun).exists():
            raise FileNotFoundError(
                f"{data_noun} is missing: install WordNet with `apt-get install wordnet-base`, or pass its data.noun."
            )
        self.lemmas: dict[str, list[str]] = {}
        self.hypernyms: dict[str, list[str]] = {}
        with open(data_noun, encoding="utf-8") as handle:
            for line in handle:
                if not line.startswith(" "):  # the licence header lines start with spaces
                    self._read_synset(line.split(" | ")[0].split())

    def _read_synset(self, fields: list[str]) -> None:
        # offset lex_filenum ss_type w_cnt(hex) [word lex_id]... p_cnt [pointer_symbol offset pos source/target]...
        wnid = "n" + fields[0]
        words = int(fields[3], 16)
        self.lemmas[wnid] = [fields[4 + 2 * i].replace("_", " ").lower() for i in range(words)]
        pointers_at = 4 + 2 * words
        pointers = fields[pointers_at + 1 : pointers_at + 1 + 4 * int(fields[pointers_at])]
        self.hypernyms[wnid] = [
            "n" + pointers[i + 1] for i in range(0, len(pointers), 4) if pointers[i] in ("@", "@i") and pointers[i + 2] == "n"
        ]

    def ancestors(self, wnid: str) -> Iterator[str]:
        """The synset and its hypernyms, nearest first (breadth-first)."""
        seen, frontier = {wnid}, [wnid]
        while frontier:
            yield from frontier
            following = [h for node in frontier for h in self.hypernyms.get(node, []) if h not in seen]
            seen.update(following)
            frontier = list(dict.fromkeys(following))


def wordnet_synonyms(name: str, wordnet_dir: str = str(Path(WORDNET_NOUNS).parent)) -> list[str]:
    """
    The other lemmas of the most frequent noun sense of `name` in WordNet 3.0 (Debian `wordnet-base`): "sofa" ->
    ["couch", "lounge"]; [] for a word WordNet does not know. Only the first sense, so that "star" gives no "ace".
    """
    key = name.strip().lower().replace(" ", "_")
    index, data = Path(wordnet_dir) / "index.noun", Path(wordnet_dir) / "data.noun"
    if not index.exists():
        raise FileNotFoundError(f"{index} is missing: install WordNet with `apt-get install wordnet-base`.")
    with open(index, encoding="utf-8") as handle:
        fields = next((line.split() for line in handle if line.startswith(key + " ")), None)
    if fields is None:
        return []
    synsets = int(fields[2])
    first_offset = fields[-synsets]  # offsets come last, the most frequent sense first
    with open(data, "rb") as handle:
        handle.seek(int(first_offset))  # a synset's offset is its byte offset in data.noun
        words = handle.readline().decode("utf-8").split(" | ")[0].split()
    lemmas = [words[4 + 2 * i].replace("_", " ").lower() for i in range(int(words[3], 16))]
    return [lemma for lemma in dict.fromkeys(lemmas) if lemma != name.strip().lower()]


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
        for ancestor in self.hypernyms.ancestors(wnid):
            concept = concept_named(self.hypernyms.lemmas.get(ancestor, []), self.vocabulary)
            if concept is not None:
                return concept
        return None


__all__ = ["ConceptNamer", "DetectorTagger", "ImageNetTagger", "WordNetHypernyms", "concept_named", "imagenet_classes",
           "wordnet_synonyms"]
