"""ConceptVocabulary: finds the visually grounded words of raw English text.

A concept has a canonical label ("teddy bear") and surface forms ("teddy bears", "teddy-bear", ...). Matching is
case-insensitive, respects word boundaries ("cat" never matches "category"), prefers the longest form ("teddy bear"
over "bear"), treats a space, a hyphen or nothing between the words of a form alike ("t-shirt", "T shirt", "tshirt"),
and is lemma-aware through plural forms generated once, when the vocabulary is built. A hyphen is a word boundary, so
"dog-friendly" mentions a dog.

All forms are compiled into one regular expression shaped as a trie, so `find` runs in the regex engine, not in a
Python loop over words.
"""

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path


FORMAT_VERSION = 1
DATA_DIR = Path(__file__).resolve().parent / "data"
SEPARATOR = " "  # the words of a multi-word form; matches a space, a hyphen, or nothing
SEPARATOR_PATTERN = r"[\s\-]?"
_SEPARATORS = re.compile(r"[\s\-]+")


@dataclass(frozen=True)
class ConceptMatch:
    """A grounded word in a text: the characters text[start:end] name `concept`."""

    start: int
    end: int
    concept: str
    text: str


def normalise_form(text: str) -> str:
    """The lookup key of a surface form: lower case, separators removed ("T-Shirt", "t shirt" -> "tshirt")."""
    return _SEPARATORS.sub("", text.lower())


def canonical_form(text: str) -> str:
    """A form as stored: lower case, words separated by one space ("T-Shirt" -> "t shirt")."""
    return SEPARATOR.join(_SEPARATORS.split(text.strip().lower()))


def plural_forms(noun: str) -> set[str]:
    """The singular and plural forms of a (possibly multi-word) noun, inflecting its last word with lemminflect."""
    try:
        from lemminflect import getAllInflections, getInflection, getLemma
    except ImportError as error:
        raise ImportError("Generating surface forms needs `pip install lemminflect`.") from error
    *head, last = canonical_form(noun).split(SEPARATOR)
    # Inflect the lemma, not the word: "pants" -> lemma "pant" -> "pants", never "pantses".
    lemmas = set(getLemma(last, upos="NOUN")) or {last}
    words = {last, *lemmas}
    for lemma in lemmas:
        words.update(getAllInflections(lemma, upos="NOUN").get("NNS", ()) or getInflection(lemma, tag="NNS"))
    return {SEPARATOR.join([*head, word]) for word in words}


def trie_pattern(forms: list[str]) -> str:
    """A regex matching exactly `forms` (canonical, lower case), factored as a trie; longer continuations first."""
    trie: dict = {}
    for form in forms:
        node = trie
        for char in form:
            node = node.setdefault(char, {})
        node[""] = {}

    def emit(node: dict) -> str:
        branches = [(SEPARATOR_PATTERN if char == SEPARATOR else re.escape(char)) + emit(child)
                    for char, child in sorted(node.items()) if char]  # fmt: skip
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        # A form may end here: the continuation is optional (greedy, so the longest form wins).
        if "" in node:
            return f"(?:{body})?" if len(branches) > 1 or len(branches[0]) > 1 else body + "?"
        return body

    return emit(trie)


class ConceptVocabulary:
    """Canonical concept labels with their surface forms, and `find(text)` for the grounded words of a text."""

    def __init__(self, concepts: dict[str, list[str]]):
        if not concepts:
            raise ValueError("A concept vocabulary needs at least one concept.")
        self._forms: dict[str, list[str]] = {}
        self._concept_of: dict[str, str] = {}
        for label, forms in concepts.items():
            if not isinstance(label, str) or not label.strip():
                raise ValueError(f"A concept label must be a non-empty string, got {label!r}.")
            self._forms[label] = self._register_forms(label, [label, *forms])
        self.label_index = {label: index for index, label in enumerate(self._forms)}
        words = trie_pattern(sorted({form for forms in self._forms.values() for form in forms}))
        self._pattern = re.compile(rf"(?<!\w)(?:{words})(?!\w)", re.IGNORECASE)

    def _register_forms(self, label: str, forms: list[str]) -> list[str]:
        registered = []
        for form in forms:
            if not isinstance(form, str) or not form.strip():
                raise ValueError(f"Concept {label!r} has an empty surface form.")
            key = normalise_form(form)
            owner = self._concept_of.setdefault(key, label)
            if owner != label:
                raise ValueError(f"The surface form {form!r} is claimed by two concepts: {owner!r} and {label!r}.")
            if canonical_form(form) not in registered:
                registered.append(canonical_form(form))
        return registered

    # ------------------------------------------------------------------------------------------ building

    @classmethod
    def from_labels(cls, labels: list[str], synonyms: dict[str, list[str]] | None = None) -> "ConceptVocabulary":
        """A vocabulary whose forms are each label's and synonym's singular and plural forms."""
        synonyms = synonyms or {}
        unknown = set(synonyms) - set(labels)
        if unknown:
            raise ValueError(f"Synonyms given for labels that are not in the vocabulary: {sorted(unknown)}.")
        return cls(
            {
                label: sorted(set().union(*(plural_forms(name) for name in [label, *synonyms.get(label, [])])))
                for label in labels
            }
        )

    @classmethod
    def from_gallery(cls, gallery, synonyms: dict[str, list[str]] | None = None) -> "ConceptVocabulary":
        """A vocabulary of a patch gallery's own concepts (its label set), with generated plural forms."""
        return cls.from_labels(list(gallery.concepts), synonyms)

    @classmethod
    def from_dict(cls, data: dict) -> "ConceptVocabulary":
        if data.get("format_version") != FORMAT_VERSION or not isinstance(data.get("concepts"), dict):
            raise ValueError(f"Not a concept vocabulary (format_version {FORMAT_VERSION} with a 'concepts' mapping).")
        return cls(data["concepts"])

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "ConceptVocabulary":
        with open(path, encoding="utf-8") as handle:
            try:
                data = json.load(handle)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} is not valid JSON: {error}.") from error
        return cls.from_dict(data)

    @classmethod
    def shipped(cls, name: str) -> "ConceptVocabulary":
        """A vocabulary shipped with the package: `"coco80"` or `"fashion_mnist"`."""
        path = DATA_DIR / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is not here (remote-code copies do not carry the package data); load a saved processor's "
                "concepts.json with ConceptVocabulary.from_json instead."
            )
        return cls.from_json(path)

    @classmethod
    def coco80(cls) -> "ConceptVocabulary":
        """The 80 COCO detection categories, with plurals and common synonyms."""
        return cls.shipped("coco80")

    @classmethod
    def fashion_mnist(cls) -> "ConceptVocabulary":
        """The 10 Fashion-MNIST classes; `labels[i]` is class i."""
        return cls.shipped("fashion_mnist")

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, "concepts": {label: list(forms) for label, forms in self._forms.items()}}

    def to_json(self, path: str | os.PathLike) -> None:
        """Writes the vocabulary as JSON atomically: a temporary file in the same folder, then a rename."""
        directory = os.path.dirname(os.path.abspath(path))
        with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".tmp", delete=False, encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle, indent=1, ensure_ascii=False)
        os.replace(handle.name, path)

    # ------------------------------------------------------------------------------------------ using

    @property
    def labels(self) -> list[str]:
        return list(self._forms)

    def forms(self, label: str) -> list[str]:
        return list(self._forms[label])

    def __len__(self) -> int:
        return len(self._forms)

    def __contains__(self, label: str) -> bool:
        return label in self._forms

    def __repr__(self) -> str:
        return f"ConceptVocabulary({len(self)} concepts, {len(self._concept_of)} surface forms)"

    def find(self, text: str) -> list[ConceptMatch]:
        """The grounded words of `text`, in order, non-overlapping, each with its character span and concept."""
        concept_of = self._concept_of
        return [
            ConceptMatch(match.start(), match.end(), concept_of[normalise_form(match.group())], match.group())
            for match in self._pattern.finditer(text)
        ]


__all__ = ["ConceptMatch", "ConceptVocabulary", "normalise_form"]
