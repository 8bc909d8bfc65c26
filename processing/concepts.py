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

Words that are also function words. Number words and numerals ("one", "seven", "7") mostly count or point at other
things ("one of them", "no one", "seven people", "one day", "page 7"); other forms can be function words too. Such a
form names the thing itself only in a noun phrase of its own, so it is matched only
- after a determiner ("a seven", "the 7", "another four"), at most two describing words before it ("a slanted
  handwritten seven"), or after a word that introduces a written symbol ("the digit 7", "she wrote seven");
- and not before "of" ("the seven of us"), a word that can only be a noun ("the seven dwarfs", "one day"), nor as
  part of a decimal, time or percentage ("7.5", "9:30", "7%").
"one" also serves as a pronoun after every determiner but "a"/"an" ("the one on the left", "no one", "this one"), so
it and "ones" need "a"/"an" or a symbol word. Plurals of other number words ("sevens", "7s") are nouns: always matched.
A vocabulary may also list phrases to `exclude` ("at sixes and sevens"): a form inside one is never matched.

Speed: all forms are compiled into one regular expression, factored as a trie, which runs on the lower-cased text;
Python only looks each match up in a dict, and looks at the context of function-word forms alone. That keeps `find`
at well over 100k sentences per second.
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

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")  # fmt: skip
# Closed-class English words (determiners, pronouns, prepositions, conjunctions, auxiliaries, modals): a concept form
# that is one of them, a number word or a numeral needs a noun-phrase context to name the thing (module docstring).
FUNCTION_WORDS = frozenset(
    "a an the this that these those each every another either neither some any no none all both half such what which "
    "whose my your his her its our their i you he she it we they me him us them one ones someone anyone everyone "
    "nobody something anything nothing everything other others of in on at by for with from to into onto upon over "
    "under about above below between among through during before after since until till against without within "
    "along across behind beyond near off out up down around than as and or but nor so yet if because while though "
    "although whether once is am are was were be been being have has had do does did can could will would shall "
    "should may might must not who whom where when why how".split()
) | frozenset(NUMBER_WORDS)
# Words before a mention that make it a noun phrase of its own. "a"/"an" and possessives ("his ones", "the
# teacher's 7") never precede the pronoun "one".
_ARTICLES = frozenset({"a", "an"})
_POSSESSIVES = frozenset("my your his her its our their".split())
_PRONOUN_CUES = _ARTICLES | _POSSESSIVES
_DETERMINERS = _ARTICLES | _POSSESSIVES | frozenset(
    "the this that these those each every another either neither any some whose which what such".split()
)
# Words that introduce a written symbol: "the digit 7", "she wrote seven", "a handwritten 4".
# ("number 5" and "figure 3" label other things: a house, a bus, a chart.)
_SYMBOL_WORDS = frozenset(
    "digit digits numbers numeral numerals figures glyph glyphs character characters symbol symbols "
    "letter letters write writes wrote written writing draw draws drew drawn drawing handwritten hand-written printed "
    "scribbled scrawled traced sketched".split()
)
_PRONOUN_FORMS = frozenset({"one", "ones"})  # "the one on the left", "the ones we saw"
# Number idioms, excluded wherever numbers are concepts (from_class_names).
NUMBER_IDIOMS = ("at sixes and sevens", "on all fours", "to the nines", "in twos and threes", "by twos and threes",
                 "in ones and twos", "nine yards", "number one", "rugby sevens", "one another")  # fmt: skip
# Common English idioms and fixed phrases that use a concept's word in another sense; excluded from any vocabulary
# whose forms they hold (so "bear in mind" holds no bear, "the town square" no square), while the sense check is on.
SENSE_IDIOMS = (
    "bear in mind", "bear with me", "bear with us", "bear the cost", "bear the brunt", "bear fruit", "bear market",
    "bull market", "cross to bear", "by heart", "at heart", "heart of gold", "change of heart", "heart of the",
    "heart and soul", "heart to heart", "take heart", "lose heart", "fair and square", "square meal", "square one",
    "town square", "city square", "market square", "village square", "square root", "square feet", "square foot",
    "square metres", "square meters", "square miles", "square kilometres", "circle of friends", "full circle",
    "inner circle", "vicious circle", "circle back", "love triangle", "movie star", "film star", "pop star",
    "rock star", "tv star", "star player", "rising star", "star sign", "lucky star", "star of the show",
    "diamond jubilee", "diamond anniversary", "diamond wedding", "red cross", "cross the road", "cross the street",
    "cross the line", "cross my mind", "cross your mind", "cross his mind", "cross her mind", "cross your fingers",
    "fingers crossed", "world cup", "super bowl", "bowl game", "dust bowl", "train of thought", "gravy train",
    "tie the knot", "tie-break", "tie break", "ended in a tie", "end in a tie", "sink or swim", "kitchen sink",
    "in the bag", "out of the bag", "mixed bag", "bag of tricks", "coat of paint", "boot camp", "to boot",
    "dress rehearsal", "dress code", "top dog", "dog days", "cat and mouse", "fat cat", "horse around", "dark horse",
    "high horse", "hold your horses", "elephant in the room", "white elephant", "black sheep", "cash cow",
    "sacred cow", "holy cow", "book a flight", "book a table", "book a room", "by the book", "cook the books",
    "open book", "turn the tables", "bus the tables", "miss the bus", "under the bus", "remote chance",
    "remote possibility", "clock in", "clock out", "around the clock", "against the clock", "apple of my eye",
    "apple of his eye", "apple of her eye", "apple of their eye", "big apple", "banana republic", "go bananas",
    "went bananas", "going bananas", "couch potato", "not my cup of tea", "piece of cake", "have your cake",
    "fly a kite", "knife edge", "under the knife", "spoon-fed", "silver spoon", "bench press", "raining cats and dogs",
    "early bird", "bird's eye", "birds of a feather", "kill two birds", "missed the boat", "miss the boat",
    "rock the boat", "in the same boat", "have a ball", "had a ball", "having a ball", "ball of wool", "ball of yarn",
    "ball of string", "on the ball", "ball is in your court", "masked ball", "carrot and stick", "river bed",
    "flower bed", "seabed", "sea bed", "bed of roses", "fork in the road", "umbrella term", "umbrella organisation",
    "umbrella organization", "zebra crossing", "make a racket", "making a racket", "office kitty", "calf muscle",
    "jet black", "jet lag", "power plant", "close call", "bus stop", "hot potato", "dog-tired", "sick as a dog",
    "let sleeping dogs lie", "curiosity killed the cat", "the cat's pyjamas", "bull in a china shop",
    "take the bull by the horns", "cock and bull", "horse's mouth", "put the cart before the horse", "pig out",
    "when pigs fly", "wild goose chase", "cold turkey", "red herring", "teddy boy", "keep your shirt on",
    "lose your shirt", "stuffed shirt", "too big for his boots", "too big for her boots", "get the boot",
    "hang up his boots", "pants on fire", "wear the trousers", "in my shoes", "in his shoes", "in her shoes",
    "dressed to kill", "coat-tails", "turncoat", "sugar-coat", "sugar coat", "bag lady", "old bag", "hold the bag",
    "pull your socks up", "cap in hand", "feather in his cap", "star-crossed", "square peg", "squared away",
    "come full circle", "go round in circles", "going round in circles", "running in circles", "cross-examine",
    "at cross purposes", "heart-to-heart", "heartbroken", "diamond in the rough", "arrow of time",
)  # fmt: skip
_SUBJECTS = frozenset("i we they you he she who".split())
_MODALS = frozenset(
    "will would can could should shall must may might do does did don't doesn't didn't won't can't cannot "
    "couldn't shouldn't wouldn't let's please".split()
)
# Words that open an object or follow a verb as its particle: "tie the game", "bear in mind", "train them".
_OBJECT_STARTERS = frozenset(
    "the a an his her their our my your its this that these those it them him us me some all up down out off in over "
    "back away".split()
)
_SENTENCE_END = ".!?"
_OPENING = " \t\n\"'([\u2018\u201c"
_LINKING_VERBS = frozenset("is are was were be been being turned turns turn looks looked look seems seemed became "
                           "becomes become grew grow grows went goes go stays stayed remain remained".split())  # fmt: skip
_CONNECTOR = re.compile(r"[\s,]*(?:and|or|nor|&)?[\s,]*")  # "the digits 3 and 8": the second shares the first's cue
_CONTEXT_WORDS = 3  # a determiner, then at most two describing words, before a mention
_CLAUSE_END = ".,;:!?)]"
_QUOTES = "\"'()[]\u2018\u2019\u201c\u201d"
_NUMBER_TAIL = re.compile(r"(?:[.,:]\d|\s*(?:%|percent\b|per\s*cent\b|o['\u2019]clock\b))")


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
    if noun.isdigit():  # a numeral: "7" -> "7s"
        return {noun, noun + "s"}
    last_word = _LAST_WORD.search(noun)
    if last_word is None:  # nothing to inflect, e.g. "t.v."
        return {noun}
    head, last = noun[: last_word.start()], last_word.group()
    # Inflect the lemma, not the word: "pants" -> "pant" -> "pants", never "pantses"; "skis" also gives "ski".
    lemmas = set(getLemma(last, upos="NOUN")) or {last}
    words = {last, *lemmas}
    for lemma in lemmas:
        plurals = set(getAllInflections(lemma, upos="NOUN").get("NNS", ()) or getInflection(lemma, tag="NNS"))
        if not plurals - {lemma}:  # lemminflect knows no plural ("two" -> "two"): English's regular one
            plurals.add(regular_plural(lemma))
        words.update(plurals, _EXTRA_PLURALS.get(lemma, ()))
    return {head + word for word in words}


def regular_plural(word: str) -> str:
    """The regular English plural: "cross" -> "crosses", "story" -> "stories", "six" -> "sixes", "two" -> "twos"."""
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def concept_names(class_name: str) -> list[str]:
    """
    A dataset's class name as the names of one concept, the label first: case, underscores and spaced hyphens are
    written as in text, "/" separates alternatives, and a number is given both as numeral and word ("Ankle_boot" ->
    ["ankle boot"]; "T - shirt / top" -> ["t-shirt", "top"]; "7" -> ["7", "seven"]; "Two" -> ["two", "2"]).
    """
    if not isinstance(class_name, str) or not class_name.strip():
        raise ValueError(f"A class name must be a non-empty string, got {class_name!r}.")
    text = re.sub(r"\s*-\s*", "-", class_name.replace("_", " "))
    names = [clean_form(name) for name in text.split("/") if name.strip()]
    if not names:
        raise ValueError(f"The class name {class_name!r} holds no word.")
    label = names[0]
    if label.isdigit() and int(label) < len(NUMBER_WORDS):
        names.append(NUMBER_WORDS[int(label)])
    elif label in NUMBER_WORDS:
        names.append(str(NUMBER_WORDS.index(label)))
    return list(dict.fromkeys(names))


def concept_label(class_name: str) -> str:
    """The concept label of a dataset's class name (the first of `concept_names`)."""
    return concept_names(class_name)[0]


def names_the_thing(lowered: str, start: int, end: int, pronoun: bool, joined: bool = False) -> bool:
    """
    Whether the function-word form at lowered[start:end] heads a noun phrase of its own (module docstring): a
    plural ("7's"), or a cue before it in the same clause (`joined`: it shares the cue of the mention that "and"/"or"
    joins it to), and neither "of", a noun-only word, a plural noun after a cue other than an article ("the two
    options"), nor a decimal, time or percentage after it.
    """
    if _NUMBER_TAIL.match(lowered, end):
        return False
    if lowered.startswith(("'s", "\u2019s"), end) and not pronoun:  # "more 7's than 0's"
        return True
    cue = "and" if joined else cue_before(lowered, start, pronoun)
    if cue is None:
        return False
    following = lowered[end : end + 40].split(None, 1)
    if following and following[0][0] not in _CLAUSE_END:
        word = following[0].rstrip(_CLAUSE_END + _QUOTES)
        if word == "of" or is_noun_only(word) or (cue not in _ARTICLES and is_plural_noun(word)):
            return False
    return True


def other_sense(text: str, lowered: str, start: int, end: int, base_form: bool, forms=()) -> str | None:
    """
    Why the form at text[start:end] does not name the thing itself, or None when it does: part of a name (capitals
    mid-sentence: "the World Cup", "Bowl"), a verb (after a subject pronoun, a modal or "to" with an object: "we
    train", "will tie", "to tie the game"; a bare form opening a sentence with an object: "Dress the wound"), or a
    modifier of a noun after it ("a bear market", "an orange scarf", "a remote village") unless that noun is one of
    the `forms` too ("a laptop keyboard" shows both).
    """
    before = text[max(0, start - 40) : start].rstrip(_OPENING).split()[-2:]
    sentence_start = not before or before[-1][-1] in _SENTENCE_END + _QUOTES
    after = text[end : end + 40].split(None, 1)
    following = after[0].strip(_CLAUSE_END + _QUOTES) if after and after[0][0] not in _CLAUSE_END else ""
    if is_titlecase(following):
        return "name"
    lowered_following = following.lower()
    if before and not sentence_start and before[-1][-1] not in _CLAUSE_END + "-\u2010\u2011":
        previous = before[-1].strip(_QUOTES)
        first_of_sentence = len(before) == 1 or before[0][-1] in _SENTENCE_END
        if is_titlecase(previous) and not first_of_sentence:
            return "name"
        previous = previous.lower()
        if previous in _SUBJECTS or previous in _MODALS:
            return "verb"
        if previous == "to" and lowered_following in _OBJECT_STARTERS:
            return "verb"
        if previous in _LINKING_VERBS and "ADJ" in (word_classes(lowered[start:end]) or ()):
            return "adjective"  # "the sky turned orange"
    elif sentence_start and base_form and lowered_following in _OBJECT_STARTERS:
        return "verb"
    if following and lowered_following not in forms and (
        is_noun_only(lowered_following) or (base_form and is_base_noun(lowered_following))
    ):
        return "modifier"  # "a bear market", "the bus stop": a singular subject would take "stops" or "stopped"
    return None


def is_titlecase(word: str) -> bool:
    """A word capitalised like a name ("World", "Street"); "I", acronyms ("TV") and "T-shirt" are not."""
    return len(word) > 1 and word.isalpha() and word[0].isupper() and word[1:].islower()


def cue_before(lowered: str, start: int, pronoun: bool) -> str | None:
    """The determiner, possessive or symbol word that opens the noun phrase ending at `start`, with only describing
    words between (a pronoun form needs an article or a possessive); None when there is none in its clause."""
    for word in reversed(lowered[max(0, start - 60) : start].split()[-_CONTEXT_WORDS:]):
        if word[-1] in _CLAUSE_END:  # the clause ended between this word and the mention
            return None
        word = word.strip(_QUOTES)
        if word in _SYMBOL_WORDS or word in (_PRONOUN_CUES if pronoun else _DETERMINERS) or word[-2:] in ("'s", "\u2019s"):
            return word
        if word in FUNCTION_WORDS or not can_describe(word):  # only describing words stand between cue and mention
            return None
    return None


def word_classes(word: str) -> frozenset[str] | None:
    """The parts of speech lemminflect knows for `word` (cached), None without lemminflect (a remote-code user who
    never installed it: the context checks then give every word the benefit of the doubt)."""
    if word not in _WORD_CLASSES:
        try:
            from lemminflect import getAllLemmas
        except ImportError:
            return None
        lemmas = getAllLemmas(word)
        noun_lemma = lemmas.get("NOUN", (word,))[0]
        # A plural: lemminflect's noun lemma differs ("options"), or an -s word it does not know ("sevens", "7s").
        plural = word.endswith("s") and not word.endswith("ss") and (noun_lemma != word or not lemmas)
        base_noun = "NOUN" in lemmas and noun_lemma == word and all(lemma == word for lemma in lemmas.get("VERB", ()))
        if base_noun and "VERB" in lemmas:  # "hit", "cut", "put": the past tense is spelled as the base form
            from lemminflect import getInflection

            base_noun = word not in getInflection(word, tag="VBD")
        _WORD_CLASSES[word] = frozenset(lemmas) | ({"PLURAL"} if plural else set()) | ({"BASE_NOUN"} if base_noun else set())
    return _WORD_CLASSES[word]


_WORD_CLASSES: dict[str, frozenset[str]] = {}


def is_noun_only(word: str) -> bool:
    """A word that can only be a noun, as the counted thing after a quantifier is ("one day", "seven dwarfs")."""
    classes = word_classes(word)
    return classes is not None and word not in FUNCTION_WORDS and classes - {"PLURAL", "PROPN"} == {"NOUN"}


def is_base_noun(word: str) -> bool:
    """A noun in its base form that is no inflected verb ("stop", "food"; not "saw", past of "see"): after a
    singular noun it can only be the head of a compound, since a present verb there would end in -s."""
    classes = word_classes(word)
    return classes is not None and word not in FUNCTION_WORDS and "BASE_NOUN" in classes and "ADV" not in classes


def is_plural_noun(word: str) -> bool:
    """A plural noun form ("options", "letters"): after "the two" it is what is counted."""
    classes = word_classes(word)
    return classes is not None and word not in FUNCTION_WORDS and "PLURAL" in classes


def can_describe(word: str) -> bool:
    """An adjective, adverb or participle ("slanted", "very", "sloppy"): what may stand between a determiner and its
    noun; a noun or verb there ("the phone rang three") means the determiner belongs to another phrase."""
    classes = word_classes(word)
    return classes is None or bool(classes & {"ADJ", "ADV"}) or word.endswith(("ed", "en", "ing"))


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

    def __init__(self, concepts: dict[str, list[str]], exclude: list[str] | tuple[str, ...] = (), sense_check: bool = True):
        """
        `concepts` maps each canonical label to its surface forms; the label is always a form of its own. `exclude`
        lists phrases in which no form is matched ("at sixes and sevens", "no one"); `sense_check` keeps only
        matches used as the thing itself (not a verb, a modifier, a name or an idiom; module docstring).
        """
        self.sense_check = bool(sense_check)
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
        if isinstance(exclude, str) or not all(isinstance(phrase, str) and phrase.strip() for phrase in exclude):
            raise ValueError(f"`exclude` must be a list of non-empty phrases, got {exclude!r}.")
        self.exclude = list(dict.fromkeys(form_words(clean_form(phrase)) for phrase in exclude))
        # Idioms that use a form in another sense ("bear in mind", "town square"), excluded with the checks on.
        self._idioms = [idiom for idiom in SENSE_IDIOMS if self.sense_check and self._names_a_form(idiom)]
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

    def _names_a_form(self, phrase: str) -> bool:
        """Whether one of the forms is a word or words of `phrase`."""
        padded = f" {phrase} "
        return any(f" {form_words(form)} " in padded for forms in self._forms.values() for form in forms)

    def _compile(self) -> None:
        """Builds the one regex of all forms, and the dict from matched text to concept."""
        # Spellings of one key ("t-shirt", "tshirt") need one pattern: the one with the most words covers the rest.
        # Excluded phrases go into the same pattern: found first or longest, they hide the forms inside them.
        spelled: dict[str, str] = {}
        self._excluded_keys = {normalise_form(phrase) for phrase in [*self.exclude, *self._idioms]}
        for forms in [*self._forms.values(), self.exclude, self._idioms]:
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
        self._base_forms = {spelling for spelling in self._concept_of_text if not spelling.endswith("s")}
        # Spellings that are function words, number words or numerals: matched only where they name the thing.
        self._in_context = {
            spelling: spelling in _PRONOUN_FORMS
            for spelling in self._concept_of_text
            if spelling in FUNCTION_WORDS or spelling in _PRONOUN_FORMS or spelling.isdigit()
        }

    # ------------------------------------------------------------------------------------------ building

    @classmethod
    def from_labels(
        cls, labels: list[str], synonyms: dict[str, list[str]] | None = None, exclude: list[str] | tuple = ()
    ) -> "ConceptVocabulary":
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
        return cls(concepts, exclude)

    @classmethod
    def from_class_names(
        cls, class_names: list[str], synonyms: dict[str, list[str]] | None = None, exclude: list[str] | tuple = ()
    ) -> "ConceptVocabulary":
        """
        The vocabulary of a labelled image set's classes, in class order: each class name becomes a concept label
        with its alternatives, numeral or number word, plurals and `synonyms` (keyed by class name or label) as
        forms (`concept_names`: "Ankle_boot" -> "ankle boot"; "7" -> "7", "7s", "seven", "sevens").
        """
        if not class_names:
            raise ValueError("A concept vocabulary needs at least one class name.")
        names = [concept_names(name) for name in class_names]
        labels = [name[0] for name in names]
        if any(name in NUMBER_WORDS for forms in names for name in forms):
            exclude = [*exclude, *NUMBER_IDIOMS]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"Two class names give the same concept label: {repeated}; rename one of the classes.")
        synonyms = synonyms or {}
        unknown = set(synonyms) - set(class_names) - set(labels)
        if unknown:
            raise ValueError(f"Synonyms given for classes that are not in the list: {sorted(unknown)}.")
        label_of = dict(zip(class_names, labels))
        merged = {label: list(name[1:]) for label, name in zip(labels, names)}
        for key, extra in synonyms.items():
            merged[label_of.get(key, key)] += [clean_form(form) for form in extra]
        return cls.from_labels(labels, merged, exclude)

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
        exclude = data.get("exclude", [])
        if not isinstance(exclude, list):
            raise ValueError("The 'exclude' entry of a concept vocabulary must be a list of phrases.")
        sense_check = data.get("sense_check", True)
        if not isinstance(sense_check, bool):
            raise ValueError("The 'sense_check' entry of a concept vocabulary must be true or false.")
        return cls({label: concepts[label] for label in labels}, exclude, sense_check)

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
        """
        {"format_version": 1, "labels": [...], "concepts": {label: [forms]}, "exclude": [phrases]}; "labels" makes
        the order explicit, "exclude" is left out when empty.
        """
        data = {
            "format_version": FORMAT_VERSION,
            "labels": self.labels,
            "concepts": {label: list(forms) for label, forms in self._forms.items()},
        }
        if self.exclude:
            data["exclude"] = list(self.exclude)
        if not self.sense_check:
            data["sense_check"] = False
        return data

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
        return (list(self._forms.items()), self.exclude, self.sense_check) == (
            list(other._forms.items()), other.exclude, other.sense_check)

    __hash__ = None  # equal by content

    def __repr__(self) -> str:
        return f"ConceptVocabulary({len(self)} concepts, {len(self._concept_of)} surface forms)"

    def is_function_form(self, text: str) -> bool:
        """
        Whether a matched `text` is a function word, number word or numeral ("one", "seven", "7"): `find` keeps those
        only in a noun phrase of their own, and the sense model (`processing/sense.py`) leaves them to that rule.
        """
        return lowercase_in_place(text) in self._in_context

    def find(self, text: str, rejected: list | None = None) -> list[ConceptMatch]:
        """
        The grounded words of `text`: in order, non-overlapping, each with its span in `text` and its concept; a
        spelling match is kept only where the sense check finds it naming the thing (module docstring), and never
        inside an `exclude` phrase. `rejected`, when given, receives (start, end, reason) of each refused match.
        """
        concept_of_text, concept_of, in_context = self._concept_of_text, self._concept_of, self._in_context
        lowered = lowercase_in_place(text)
        matches, cued_until = [], -1
        for match in self._pattern.finditer(lowered):
            start, end = match.span()
            found = match.group()
            concept = concept_of_text.get(found)
            if concept is None:
                key = normalise_form(found)
                if key in self._excluded_keys:
                    if rejected is not None:
                        rejected.append((start, end, "excluded phrase"))
                    continue
                concept = concept_of[key]
            if found in in_context:
                joined = cued_until >= 0 and _CONNECTOR.fullmatch(lowered, cued_until, start) is not None
                reason = None if names_the_thing(lowered, start, end, in_context[found], joined) else "not a noun phrase"
                cued_until = end if reason is None else cued_until
            else:
                reason = other_sense(text, lowered, start, end, found in self._base_forms, concept_of_text) if self.sense_check else None
            if reason is not None:
                if rejected is not None:
                    rejected.append((start, end, reason))
                continue
            matches.append(ConceptMatch(start, end, concept, text[start:end]))
        return matches


__all__ = ["ConceptMatch", "ConceptVocabulary", "concept_label", "concept_names", "normalise_form"]
