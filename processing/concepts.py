"""ConceptVocabulary: finds the visually grounded words of raw English text.

A concept has a canonical label ("teddy bear") and surface forms ("teddy bears", "teddy", ...). `find(text)` returns
the character spans of the forms in a text, with these rules:

- case does not matter, and spans index the original text ("DOGS!" -> "DOGS");
- a form is a whole word: "cat" never matches "category", "concatenate" or "scat", "bus" never "business";
- punctuation around a word does not matter: "dog," "(cats)" "dog's" (the span stops before the apostrophe);
- plurals, irregular ones included ("mice", "geese", "knives"), match because they are forms, generated once with
  lemminflect when the vocabulary is built (`from_labels`); `find` does no lemmatisation of its own;
- a space, a hyphen or nothing between the words of a form are alike: "t-shirt", "T shirt", "tshirt", "teddy-bear";
- the longest form wins ("teddy bear" over "bear", "hot dog" over "dog") and matches never overlap.

Hyphenated compounds: English puts the head of a compound last, so a form that ends a compound is the thing itself
("fire-truck", "e-bike": matched) and a form that starts one is only a modifier ("dog-friendly", "man-made",
"orange-coloured", "cat-like": not matched). A form glued to a word by an apostrophe is not a word of its own either
("o'clock" holds no clock, "don't shirt" no t-shirt).

Speed: all forms are compiled into one regular expression, factored as a trie, which runs on the lower-cased text;
Python only looks each match up in a dict. That keeps `find` at well over 100k sentences per second.
"""

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path


FORMAT_VERSION = 1
DATA_DIR = Path(__file__).resolve().parent / "data"

# What may stand, or be left out, between the words of a multi-word form: whitespace and hyphens (U+2010, U+2011).
_SEPARATOR_CHARS = r"\s\-\u2010\u2011"
_SEPARATORS = re.compile(rf"[{_SEPARATOR_CHARS}]+")
_WORD_GAP = rf"[{_SEPARATOR_CHARS}]?"
# Not inside a word, nor glued to the word before by an apostrophe ("o'clock").
_LEFT_BOUNDARY = r"(?<!\w)(?<!\w['\u2019])"
# Not inside a word, nor the first part of a hyphenated compound ("dog-friendly").
_RIGHT_BOUNDARY = r"(?!\w)(?![\-\u2010\u2011]\w)"
_LAST_WORD = re.compile(r"[^\W\d_]+$")
# Suppletive plurals that lemminflect does not give as plurals (it gives "persons" only).
_EXTRA_PLURALS = {"person": ("people",)}


@dataclass(frozen=True, slots=True)
class ConceptMatch:
    """A grounded word in a text: `text` is the original text[start:end] and names `concept`."""

    start: int
    end: int
    concept: str
    text: str


def lowercase_in_place(text: str) -> str:
    """`text` in lower case, character for character, so that an index into it is an index into `text`."""
    lowered = text.lower()
    if len(lowered) == len(text):  # no character grew, so every one maps to one
        return lowered
    # "İ" lower-cases to two characters; such characters keep their case so that spans stay true.
    return "".join(low if len(low := char.lower()) == 1 else char for char in text)


def normalise_form(text: str) -> str:
    """The lookup key of a form: lower case, spaces and hyphens removed ("T-Shirt", "t shirt", "tshirt" -> "tshirt")."""
    return _SEPARATORS.sub("", lowercase_in_place(text))


def clean_form(text: str) -> str:
    """A form as stored: lower case, trimmed, runs of whitespace as one space; hyphens stay ("T-Shirt" -> "t-shirt")."""
    return " ".join(lowercase_in_place(text).split())


def form_words(form: str) -> str:
    """A form's words joined by single spaces, whatever separated them ("t-shirt" -> "t shirt")."""
    return " ".join(word for word in _SEPARATORS.split(form) if word)


def plural_forms(noun: str) -> set[str]:
    """A noun's singular and plural forms, inflecting its last word with lemminflect ("teddy bear" -> +"teddy bears")."""
    try:
        from lemminflect import getAllInflections, getInflection, getLemma
    except ImportError as error:
        raise ImportError(
            "ConceptVocabulary.from_labels generates plural forms with lemminflect: `pip install lemminflect`. "
            "Loading a saved vocabulary (from_json, from_dict) does not need it."
        ) from error
    noun = clean_form(noun)
    last_word = _LAST_WORD.search(noun)
    if last_word is None:  # nothing to inflect, e.g. "t.v."
        return {noun}
    head, last = noun[: last_word.start()], last_word.group()
    # Inflect the lemma, not the word: "pants" -> "pant" -> "pants", never "pantses"; "skis" also gives "ski".
    lemmas = set(getLemma(last, upos="NOUN")) or {last}
    words = {last, *lemmas}
    for lemma in lemmas:
        words.update(getAllInflections(lemma, upos="NOUN").get("NNS", ()) or getInflection(lemma, tag="NNS"))
        words.update(_EXTRA_PLURALS.get(lemma, ()))
    return {head + word for word in words}


def trie_pattern(forms: list[str]) -> str:
    """A regex for exactly `forms` (words joined by single spaces), factored as a trie; longer forms are tried first."""
    trie: dict = {}
    for form in forms:
        node = trie
        for char in form:
            node = node.setdefault(char, {})
        node[""] = {}  # a form ends here

    def emit(node: dict) -> str:
        branches = [
            (_WORD_GAP if char == " " else re.escape(char)) + emit(child) for char, child in sorted(node.items()) if char
        ]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if "" not in node:
            return body
        # A form ends here but may go on: the continuation is optional and greedy, so the longest form wins.
        return body + "?" if len(branches) == 1 and len(body) == 1 else f"(?:{body})?"

    return emit(trie)


class ConceptVocabulary:
    """Canonical concept labels with their surface forms, and `find(text)` for the grounded words of a text."""

    def __init__(self, concepts: dict[str, list[str]]):
        """`concepts` maps each canonical label to its surface forms; the label is always a form of its own."""
        if not isinstance(concepts, dict) or not concepts:
            raise ValueError("A concept vocabulary needs at least one concept: a dict of label -> surface forms.")
        self._forms: dict[str, list[str]] = {}
        self._concept_of: dict[str, str] = {}  # normalise_form(form) -> label
        for label, forms in concepts.items():
            if not isinstance(label, str) or not label.strip():
                raise ValueError(f"A concept label must be a non-empty string, got {label!r}.")
            if isinstance(forms, str) or not isinstance(forms, (list, tuple)):
                raise ValueError(f"The forms of concept {label!r} must be a list of strings, got {forms!r}.")
            self._forms[label] = self._register_forms(label, [label, *forms])
        self.label_index = {label: index for index, label in enumerate(self._forms)}
        self._compile()

    def _register_forms(self, label: str, forms: list[str]) -> list[str]:
        """The cleaned, distinct forms of `label`; refuses empty forms and forms that another concept has."""
        registered = []
        for form in forms:
            if not isinstance(form, str) or not normalise_form(form):
                raise ValueError(f"Concept {label!r} has an empty surface form: {form!r}.")
            owner = self._concept_of.setdefault(normalise_form(form), label)
            if owner != label:
                raise ValueError(f"The surface form {form!r} is claimed by two concepts: {owner!r} and {label!r}.")
            if clean_form(form) not in registered:
                registered.append(clean_form(form))
        return registered

    def _compile(self) -> None:
        """Builds the one regex of all forms, and the dict from matched text to concept."""
        # Spellings of one key ("t-shirt", "tshirt") need one pattern: the one with the most words covers the rest.
        spelled: dict[str, str] = {}
        for forms in self._forms.values():
            for form in forms:
                words, key = form_words(form), normalise_form(form)
                if words.count(" ") >= spelled.get(key, "").count(" "):
                    spelled[key] = words
        # Most matches are spelled as a stored form and are found as they are; others go through normalise_form.
        self._concept_of_text = {
            spelling: label for label, forms in self._forms.items() for form in forms for spelling in (form, form_words(form))
        }
        words = trie_pattern(sorted(spelled.values()))
        self._pattern = re.compile(f"{_LEFT_BOUNDARY}(?:{words}){_RIGHT_BOUNDARY}")

    # ------------------------------------------------------------------------------------------ building

    @classmethod
    def from_labels(cls, labels: list[str], synonyms: dict[str, list[str]] | None = None) -> "ConceptVocabulary":
        """A vocabulary whose forms are the singular and plural forms of each label and of its synonyms."""
        synonyms = synonyms or {}
        unknown = set(synonyms) - set(labels)
        if unknown:
            raise ValueError(f"Synonyms given for labels that are not in the vocabulary: {sorted(unknown)}.")
        concepts = {}
        for label in labels:
            if not isinstance(label, str) or not label.strip():
                raise ValueError(f"A concept label must be a non-empty string, got {label!r}.")
            names = [label, *synonyms.get(label, [])]
            if not all(isinstance(name, str) and name.strip() for name in names):
                raise ValueError(f"Concept {label!r} has an empty synonym: {names[1:]!r}.")
            concepts[label] = sorted(set().union(*(plural_forms(name) for name in names)))
        return cls(concepts)

    @classmethod
    def from_gallery(cls, gallery, synonyms: dict[str, list[str]] | None = None) -> "ConceptVocabulary":
        """A vocabulary of a patch gallery's own concepts (its label set), with generated plural forms."""
        return cls.from_labels(list(gallery.concepts), synonyms)

    @classmethod
    def from_dict(cls, data: dict) -> "ConceptVocabulary":
        """The vocabulary that `to_dict` described; the optional "labels" list fixes the label order."""
        if not isinstance(data, dict) or not isinstance(data.get("concepts"), dict):
            raise ValueError("Not a concept vocabulary: expected {'format_version': 1, 'concepts': {label: [forms]}}.")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"Unsupported concept vocabulary format_version {data.get('format_version')!r}.")
        concepts = data["concepts"]
        labels = data.get("labels", list(concepts))
        if not isinstance(labels, list) or sorted(labels, key=repr) != sorted(concepts, key=repr):
            raise ValueError("The 'labels' list of a concept vocabulary must name each concept exactly once.")
        return cls({label: concepts[label] for label in labels})

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "ConceptVocabulary":
        """The vocabulary saved at `path` by `to_json`."""
        with open(path, encoding="utf-8") as handle:
            try:
                data = json.load(handle)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} is not valid JSON: {error}.") from error
        return cls.from_dict(data)

    @classmethod
    def shipped(cls, name: str) -> "ConceptVocabulary":
        """A vocabulary shipped in the package's data folder: "coco80" or "fashion_mnist"."""
        path = DATA_DIR / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"The shipped vocabulary {name!r} is not at {path}: remote-code copies of this module do not carry "
                "the package's data folder. Load the concepts.json saved next to the processor with "
                "ConceptVocabulary.from_json, or install the package."
            )
        return cls.from_json(path)

    @classmethod
    def coco80(cls) -> "ConceptVocabulary":
        """The 80 COCO detection categories, with plurals and common synonyms ("sofa" -> couch)."""
        return cls.shipped("coco80")

    @classmethod
    def fashion_mnist(cls) -> "ConceptVocabulary":
        """The 10 Fashion-MNIST classes: `labels[i]` is class i. "top" is no form of t-shirt ("on top of")."""
        return cls.shipped("fashion_mnist")

    # ------------------------------------------------------------------------------------------ saving

    def to_dict(self) -> dict:
        """{"format_version": 1, "labels": [...], "concepts": {label: [forms]}}; "labels" makes the order explicit."""
        return {
            "format_version": FORMAT_VERSION,
            "labels": self.labels,
            "concepts": {label: list(forms) for label, forms in self._forms.items()},
        }

    def to_json(self, path: str | os.PathLike) -> None:
        """Writes the vocabulary as JSON atomically: a temporary file in the same folder, then a rename over `path`."""
        directory = os.path.dirname(os.path.abspath(path))
        handle = tempfile.NamedTemporaryFile(
            "w", dir=directory, prefix=".concepts-", suffix=".tmp", delete=False, encoding="utf-8"
        )
        try:
            with handle:
                json.dump(self.to_dict(), handle, indent=1, ensure_ascii=False)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(handle.name, 0o644)  # mkstemp makes it private; a saved processor is meant to be shared
            os.replace(handle.name, path)
        except BaseException:
            os.unlink(handle.name)
            raise

    # ------------------------------------------------------------------------------------------ using

    @property
    def labels(self) -> list[str]:
        """The canonical labels, in order: `labels[i]` is concept id i."""
        return list(self._forms)

    def forms(self, label: str) -> list[str]:
        """The surface forms of `label`, the label first."""
        if label not in self._forms:
            raise KeyError(f"{label!r} is not a concept of this vocabulary.")
        return list(self._forms[label])

    def __len__(self) -> int:
        return len(self._forms)

    def __contains__(self, label: object) -> bool:
        return label in self._forms

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConceptVocabulary):
            return NotImplemented
        return list(self._forms.items()) == list(other._forms.items())

    __hash__ = None  # equal by content

    def __repr__(self) -> str:
        return f"ConceptVocabulary({len(self)} concepts, {len(self._concept_of)} surface forms)"

    def find(self, text: str) -> list[ConceptMatch]:
        """The grounded words of `text`: in order, non-overlapping, each with its span in `text` and its concept."""
        concept_of_text, concept_of = self._concept_of_text, self._concept_of
        matches = []
        for match in self._pattern.finditer(lowercase_in_place(text)):
            start, end = match.span()
            found = match.group()
            concept = concept_of_text.get(found) or concept_of[normalise_form(found)]
            matches.append(ConceptMatch(start, end, concept, text[start:end]))
        return matches


__all__ = ["ConceptMatch", "ConceptVocabulary", "normalise_form"]
