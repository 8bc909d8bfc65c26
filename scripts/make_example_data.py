"""Write a small, realistic "your own data" example: a labelled image set plus a text-only corpus, fully offline.

The output folder gets
  images/train/<class>/*.png   the Hugging Face `imagefolder` layout: load it with
  images/test/<class>/*.png    datasets.load_dataset("imagefolder", data_dir="DIR/images")
  corpus.txt                   one sentence per line, written with no image in sight (unpaired)

Examples (--example):
  digits   the real handwritten digits of scikit-learn (load_digits: 1,797 scans, 8x8, grey levels 0-16), scaled to
           0-255 and upscaled to 32x32 grey PNGs, in class folders "0" ... "9", split per class about 70/30 (seeded).
           The corpus talks about digits as people write about them: word forms and numerals ("a seven", "the digit
           nine", "a sloppy 5", "sevens", "7s"), about 15% of sentences use number words only in other roles ("one of
           them", "no one", "one day", "seven people came") and about 20% hold no number at all.
  shapes   synthetic shapes drawn with PIL: circle, square, triangle, star, heart, cross, arrow, crescent, hexagon and
           diamond; 64x64 RGB with random colours, size (40-90% of the image), position and rotation; 60 train and 30
           test images per class. The corpus mentions shapes on signs, flags, logos, tiles, cookies, quilts, jewellery,
           road markings, playing cards... and about 20% of its sentences name no shape.

Every random choice follows from --seed, so a run is deterministic. An existing non-empty output
folder is refused unless --overwrite, which replaces its images/ and corpus.txt (and nothing else).

The last line on stdout is one JSON object summarising what was written (also written to --output).
"""

import argparse
import math
import re
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vlmixer.scripts.figures import report


TEST_SHARE = 0.3
DIGIT_SIZE = 32
SHAPE_SIZE = 64
SUPERSAMPLE = 4  # shapes are drawn this many times larger, then reduced: smooth edges
MIN_COLOUR_DISTANCE = 150  # shape and background colours: Euclidean distance in RGB...
MIN_LUMA_DIFFERENCE = 50  # ...and difference in brightness

# ---------------------------------------------------------------------------------------------------------------------
# Shared helpers


def choose(rng: np.random.Generator, options):
    """One element of `options`, drawn with `rng`."""
    return options[rng.integers(len(options))]


def with_articles(sentence: str) -> str:
    """Fixes the article before a vowel sound: "a eight" -> "an eight", "a 8" -> "an 8" ("a one" stays)."""
    return re.sub(r"\b([Aa]) (?=(?!one\b)[aeiAEI]|o(?!ne\b)|8|11\b|18\b)", r"\1n ", sentence)


def capitalised(sentence: str) -> str:
    """The sentence with its first letter in upper case."""
    return sentence[:1].upper() + sentence[1:]


def after_opener(opener: str, sentence: str) -> str:
    """`sentence` after `opener` and a comma, its first letter in lower case unless it is "I" or a name."""
    first_word = sentence.split(maxsplit=1)[0]
    return f"{opener}, {sentence if first_word in KEEP_CASE else sentence[:1].lower() + sentence[1:]}"


def unique_sentences(count: int, make, rng: np.random.Generator, max_tries: int = 50) -> list[str]:
    """`count` sentences from `make(rng)`, without repeats while new ones keep coming (then repeats are allowed)."""
    sentences, seen, misses = [], set(), 0
    while len(sentences) < count:
        sentence = make(rng)
        if sentence in seen and misses < max_tries * count:
            misses += 1
            continue
        seen.add(sentence)
        sentences.append(sentence)
    return sentences


def mixed_corpus(parts: dict[str, tuple[float, object]], total: int, rng: np.random.Generator):
    """`total` sentences: for each kind, its share of them made by its maker; shuffled. Returns (kind, sentence)
    pairs and the counts."""
    counts = {kind: round(share * total) for kind, (share, _) in parts.items()}
    first = next(iter(parts))
    counts[first] += total - sum(counts.values())  # the first kind takes the rounding remainder
    corpus = []
    for kind, (_, make) in parts.items():
        corpus += [(kind, sentence) for sentence in unique_sentences(counts[kind], make, rng)]
    return [corpus[i] for i in rng.permutation(len(corpus))], counts


def write_png(image: Image.Image, path: Path) -> None:
    """Saves `image` as a PNG, making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=False)


# ---------------------------------------------------------------------------------------------------------------------
# digits: images

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_PLURALS = ("zeros", "ones", "twos", "threes", "fours", "fives", "sixes", "sevens", "eights", "nines")


def digit_image(pixels: np.ndarray) -> Image.Image:
    """An 8x8 scan with grey levels 0-16 as a 32x32 8-bit grey image (bilinear upscaling)."""
    grey = np.clip(np.rint(pixels * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").resize((DIGIT_SIZE, DIGIT_SIZE), Image.Resampling.BILINEAR)


def split_per_class(labels: np.ndarray, test_share: float, rng: np.random.Generator) -> dict[str, list[int]]:
    """Indices for "train" and "test": each class shuffled and cut so that about `test_share` of it is test."""
    splits = {"train": [], "test": []}
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)[rng.permutation(int((labels == label).sum()))]
        cut = round(test_share * len(members))
        splits["test"] += sorted(members[:cut].tolist())
        splits["train"] += sorted(members[cut:].tolist())
    return splits


def write_digit_images(images_dir: Path, rng: np.random.Generator, test_share: float = TEST_SHARE) -> dict:
    """Writes scikit-learn's handwritten digits as images/<split>/<digit>/<index>.png; returns the counts."""
    from sklearn.datasets import load_digits  # the scans ship inside the scikit-learn wheel: no download

    digits = load_digits()
    splits = split_per_class(digits.target, test_share, rng)
    for split, indices in splits.items():
        for index in indices:
            path = images_dir / split / str(digits.target[index]) / f"{index:04d}.png"
            write_png(digit_image(digits.images[index]), path)
    return {split: len(indices) for split, indices in splits.items()}


# ---------------------------------------------------------------------------------------------------------------------
# digits: corpus

DIGIT_FEATURES = {  # what tells a handwritten digit apart, as a noun phrase
    0: ["a narrow oval", "a slash through the middle", "a small gap at the top", "a lopsided loop"],
    1: ["a little flag at the top", "a flat base", "a slight lean to the right", "a long hooked nose"],
    2: ["a curly loop at the bottom", "a flat base", "a sharp hook", "a long swan neck"],
    3: ["a flat top", "two rounded bumps", "a pointed middle", "a tail that curls back"],
    4: ["an open top", "a closed triangle", "a long crossing stroke", "a stubby left arm"],
    5: ["a flat cap", "a round belly", "a top stroke that floats off on its own", "a sharp corner"],
    6: ["a closed loop at the bottom", "a long curling stem", "a tiny loop", "a straight back"],
    7: ["a bar through the middle", "a hooked top", "a long straight leg", "a wavy top stroke"],
    8: ["two stacked loops", "a pinched waist", "a lopsided top loop", "a top loop smaller than the bottom one"],
    9: ["a loop at the top", "a straight tail", "a curved tail", "a tail that hooks to the left"],
}
CONFUSED = [(1, 7), (3, 8), (4, 9), (5, 6), (0, 6), (2, 7), (3, 5), (5, 8), (8, 9), (0, 8), (1, 4), (2, 3), (7, 9),
            (0, 9), (6, 8), (2, 5), (6, 0), (1, 2)]  # fmt: skip
DIGIT_ADJECTIVES = ["sloppy", "neat", "crooked", "slanted", "tiny", "faint", "bold", "smudged", "hurried", "cramped",
                    "curly", "shaky", "careful", "backwards", "oversized", "wobbly", "elegant", "childish", "squashed",
                    "thick", "spidery", "pencilled", "looping", "blotchy"]  # fmt: skip
WRITERS = [("My grandfather", "his"), ("The teacher", "her"), ("Our neighbour", "his"), ("The clerk", "her"),
           ("My sister", "her"), ("The boy at the back", "his"), ("The postman", "his"), ("Grandma", "her"),
           ("The accountant", "his"), ("My brother", "his"), ("The new intern", "her"), ("The bank manager", "her"),
           ("The little girl", "her"), ("My dad", "his"), ("The shopkeeper", "his"), ("The nurse", "her"),
           ("Our maths teacher", "his"), ("The courier", "her"), ("My flatmate", "her"), ("The old farmer", "his"),
           ("She", "her"), ("He", "his"), ("My son", "his"), ("The student", "her")]  # fmt: skip
DOCUMENTS = ["envelope", "cheque", "worksheet", "tax form", "parcel label", "postcard", "receipt", "exam paper",
             "delivery note", "invoice", "registration form", "sticky note", "whiteboard", "blackboard", "notepad",
             "order form", "ballot paper", "bank slip", "shopping list", "price tag"]  # fmt: skip
FIELDS = ["postcode", "house number", "account number", "phone number", "date", "amount", "reference number",
          "zip code", "PIN", "serial number", "order number", "total"]  # fmt: skip
TOOLS = ["in pencil", "in blue ink", "in red biro", "with a felt-tip", "in chalk", "with a fountain pen",
         "with a thick marker", "in crayon", "in green ink", "with a blunt pencil"]  # fmt: skip
MACHINES = ["The scanner", "The sorting machine", "The OCR software", "The model", "The app", "The cash machine",
            "The classifier", "The reading machine at the depot"]  # fmt: skip
TRAP_OPENERS = ["One day", "One morning", "At one point", "For one thing", "Nine times out of ten", "Two days later",
                "One evening", "Three weeks ago", "At nine o'clock", "Once upon a time", "One by one",
                "Ten minutes later", "A couple of years ago", "One Monday", "Five years ago", "Twice a year",
                "By seven in the evening", "Two hours before the deadline", "At half past four",
                "One afternoon"]  # fmt: skip
PLAIN_OPENERS = ["Last week", "Yesterday", "In the end", "Apparently", "This morning", "As usual", "Luckily",
                 "Of course", "In the old days", "Before lunch"]  # fmt: skip
EVENT_OPENERS = ["One day", "One morning", "At one point", "One evening", "Two days later", "Ten minutes later",
                 "One afternoon", "Three weeks ago", "One Monday", "A couple of years ago",
                 "Just after nine"]  # fmt: skip
KEEP_CASE = ("I", "Dad", "Mum", "Grandma", "Grandpa")  # first words that stay capitalised after an opener

DIGIT_EVENT_TEMPLATES = [  # one-off events in the past: these may follow an opener ("One morning, ...")
    "{Writer} mistook {a} for {a2} on the {doc}.",
    "The {doc} was sent back because the {n} in the {field} looked like {a2}.",
    "{Machine} read {a} as {a2}.",
    "It took me a moment to see that the smudge on the {doc} was {a}.",
    "{Writer} wrote {a} {tool} on the {doc}.",
    "The child drew {a} backwards, as small children often do.",
    "Only {a} was still legible on the soggy {doc}.",
    "{Writer} squeezed {a} into the tiny box on the {doc}.",
    "The {n} on the {doc} was so faint that the sorting machine missed it.",
    "The {field} ended in {a}, so the letter went to the wrong town.",
    "The teacher circled every {n} that had been written backwards.",
    "{Writer} traced {counted} on the worksheet.",
    "Somebody had changed the printed {n} on the {doc} into {a2} with a pen.",
    "There were {counted} on the page and not a single {w2}.",
    "The teacher showed the class how to form {a} in one smooth stroke.",
    "{Writer} practised {pl} until the page was full.",
    "The clerk squinted at the {adj} {w} on the {doc}.",
    "Stencilled on the crate was a large {n}.",
    "In the box for the year, somebody had written {a} upside down.",
    "{Writer} corrected the {n} on the {doc} with a red pen.",
    "Among the scribbles on the napkin was {a}.",
    "The ink had run, and the {n} bled into the {n2} beside it.",
    "We asked people to write {a} on a card, and no two looked the same.",
    "Someone had scratched {a} into the paint on the bench.",
    "{Writer} wrote {counted} down the margin while waiting on the phone.",
    "{A_adj} was scrawled across the top of the {doc}.",
    "{Writer} could not decide whether the last digit was {a} or {a2}.",
    "The inspector noticed that {counted} on the {doc} had been written over.",
    "{Machine} had no trouble with the {pl}, but it failed on every {w2}.",
    "The {w} on the licence plate was painted over with {a2}.",
    "She wrote a huge {n} on the whiteboard and asked what it was.",
    "{Writer} underlined the {n} so it would not be read as {a2}.",
]  # fmt: skip
DIGIT_TEMPLATES = [  # general remarks
    "{Writer} always writes {poss} {pl} with {feature}.",
    "Without {feature}, {a} can look just like {a2}.",
    "{Pl} and {pl2} are easy to confuse when the writing is hurried.",
    "Is that {a} or {a2}?",
    "{Machine} keeps reading {pl} as {pl2}.",
    "{Poss_cap} {pl} lean so far to the right that they almost fall over.",
    "The last digit on the {doc} was {a}, not {a2}.",
    "On old tax forms you often see {pl} written with {feature}.",
    "Every {n} in the ledger was written in the same careful hand.",
    "I can never tell {poss} {pl} from {poss} {pl2}.",
    "You can recognise {a} by {feature}.",
    "The {w} on the old postcard had been written with a dip pen.",
    "{Poss_cap} handwriting turns every {w} into something like {a2}.",
    "A {adj} {n} is easily read as {a2} by the machine.",
    "My {pl} always come out smaller than my {pl2}.",
    "Add {feature} and nobody will mistake your {w} for {a2}.",
    "The model confuses {pl} with {pl2} more often than with anything else.",
    "The {w} on the sticky note was barely legible.",
    "A {w} written in a hurry often loses {feature}.",
    "The printed {n} and the handwritten {n} on the form looked nothing alike.",
    "Each row of the worksheet starts with a dotted {w} to trace.",
    "The {w2} and the {w} in the {field} were the wrong way round.",
    "The old typewriter printed {pl} that looked a lot like {pl2}.",
    "In the dataset, the {adj} {pl} are the hardest to classify.",
    "Half of the {pl} on the {doc} were written {tool}.",
    "That {adj} {w} could just as well be {a2}.",
    "The digit {w} is written with {feature} in many countries.",
    "The digit {n} on the meter had worn away to a faint outline.",
    "Look at the {adj} {w} in the corner of the {doc}.",
    "{Pl} written {tool} smudge easily.",
    "The {field} was all {pl} and {pl2}, which made it hard to read.",
    "Grandma's {pl} have {feature}, just like in her old school books.",
    "Handwritten {pl} and {pl2} look alike when the pen skips.",
    "The sorting office keeps a poster of {adj} {pl} that fooled the machines.",
    "When {a} has {feature}, it is hard to misread.",
    "The last {w} on the page was just a blot of ink.",
]  # fmt: skip
TRAP_CLAUSES = [
    "the postman left the parcel at the wrong door", "the teacher collected the worksheets",
    "the letters piled up behind the door", "nobody answered the phone at the sorting office",
    "the clerk stamped every form", "the printer ran out of paper", "the queue reached the street",
    "we finally found the missing invoice", "the children handed in their homework",
    "the bank closed the old account", "the courier lost the delivery note", "it started to rain on the envelopes",
    "the office moved to a bigger building", "the school changed its report cards",
    "the sorting machine broke down", "my aunt sent a postcard from the seaside", "the inspector checked the ledgers",
    "the library cleared out its old filing cabinets", "the pupils practised their handwriting",
    "the manager signed the cheques", "the lights went out in the post office", "the form was finally accepted",
    "everybody had to queue outside", "the old typewriter was thrown away",
    "the fountain pen leaked all over the desk",
    "the class went on a trip to the museum", "the stamps were sold out", "the parcels were sorted by hand",
    "we moved house", "the receipts were filed away", "the new scanner arrived",
    "the shop stopped taking cheques", "the exam results came out",
    "the bookkeeper retired", "the ink dried up", "the headmaster read the letters aloud",
]  # fmt: skip
TRAP_SENTENCES = [
    "{Count} people queued at the post office counter.", "{Count} of us stayed behind to mark the tests.",
    "{Count} parcels arrived in the morning post.", "We sorted {count_numeral} envelopes before lunch.",
    "The class was split into {count} groups.", "It took {count} attempts to get the form right.",
    "Give me {count} minutes to find the receipt.", "We need {count} more stamps for these letters.",
    "The bus leaves at {clock_numeral} in the morning.", "There were {count_numeral} cats asleep in the sorting room.",
    "Turn to page {page} of the workbook.", "She lives at number {page}, next to the bakery.",
    "The meeting is in room {page} on the second floor.", "The invoice was paid {count} weeks late.",
    "{Count} of the teachers signed the letter.", "The parcel weighed about {count_numeral} kilos.",
    "The ticket cost {count_numeral} pounds.", "The train leaves from platform {page}.",
    "The recipe needs {count} eggs and a cup of flour.", "They have been pen pals for {count} years.",
    "We had to wait {count_numeral} minutes for the clerk.", "The letter took {count} days to arrive.",
    "No one could read the address on the parcel.", "No one knew who had signed the card.",
    "The one on the left is mine.", "Which one did you post?", "She sorted the envelopes one by one.",
    "He read the whole letter in one go.", "The office was at sixes and sevens after the move.",
    "One of them forgot to sign the cheque.", "Each one of the forms needs a stamp.",
    "Only one person turned up to the meeting.", "One or two letters arrive every day.",
    "He was on cloud nine all week.", "A stitch in time saves nine.", "Two heads are better than one.",
    "She killed two birds with one stone.", "We waited for ages, but no one came.",
    "The twins finish each other's sentences.", "I'd rather keep the one with the blue cover.",
    "One of these days I will answer all my letters.", "He is the one who wrote the complaint.",
    "Not one of the pens on the desk worked.", "You're the only one who still writes letters.",
    "The two of them share an office.", "They wrote to one another for years.",
    "At the end of the day, one form is as good as another.", "The new one is much faster.",
    "She got all ten questions right.", "The ledger covers the years {year} to {year2}.",
    "The pen was made in {year}.", "I'll be there in five.", "Three cheers for the postman!",
]  # fmt: skip
COUNT_WORDS = ["Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten"]
PLAIN_SUBJECTS = ["My aunt", "The teacher", "Our neighbour", "The clerk", "The postman", "A pupil", "Grandpa",
                  "The accountant", "My cousin", "The receptionist", "The new intern", "Her brother", "The librarian",
                  "My flatmate", "The shopkeeper", "A stranger", "The nurse", "Dad", "Mum", "The headmistress",
                  "The courier", "The lawyer"]  # fmt: skip
PLAIN_PREDICATES = [
    "wrote the address in capital letters", "left a note on the kitchen counter",
    "sharpened every pencil in the drawer", "forgot to sign the birthday card", "copied the notes from the blackboard",
    "sealed the envelope with a sticker", "ran out of ink halfway through the letter",
    "licked the stamp and stuck it on crooked", "filled in the form in block capitals",
    "smudged the ink with the side of a hand", "read the postcard aloud at breakfast",
    "scribbled a shopping list on the back of a receipt", "kept every letter in a biscuit tin",
    "practised joined-up writing at the kitchen table", "erased the pencil marks before handing in the test",
    "posted the letter without a stamp", "wrote a thank-you note in green ink",
    "wrote the date at the top of the page",
    "tore the corner of the page by accident", "found an old diary in the attic", "signed for the parcel at the door",
    "underlined the title with a ruler", "spilled tea over the homework", "could not read the doctor's handwriting",
    "stuck the label on upside down", "marked the spelling tests after dinner",
    "addressed the envelope to the wrong street", "kept a journal all through the summer",
    "asked for a clearer copy of the invoice", "wrote a cheque for the plumber",
    "filed the receipts in alphabetical order", "checked the address against the map",
    "drew a smiley face in the margin", "scanned the forms into the computer",
    "wrote the recipe on a scrap of paper", "copied the address from an old envelope",
    "has beautiful handwriting", "writes very small letters", "presses too hard with the pen",
    "bought a new fountain pen", "prefers pencils to pens", "lost the receipt on the way home",
]  # fmt: skip
PLAIN_SENTENCES = [
    "Handwriting varies a lot from person to person.", "The post arrives late on Mondays.",
    "Sorting machines read addresses faster than any clerk.", "Cursive is no longer taught in many schools.",
    "A good pen makes neat writing much easier.", "The ink on the old letters had turned brown.",
    "Left-handed children often smudge their writing.", "The handwriting on the envelope was almost illegible.",
    "Nobody writes cheques any more.", "Pencil fades faster than ink.", "The form must be filled in by hand.",
    "Her handwriting slopes steeply to the right.", "Blotting paper used to sit on every desk.",
    "The letter was written on thin blue airmail paper.", "Some people still prefer paper forms.",
    "The stamp machine at the post office was broken again.", "Teachers used to mark homework in red ink.",
    "The archive keeps letters from the last century.", "Capital letters are easier to read than cursive.",
    "The scanner struggles with faded ink.",
]  # fmt: skip


def digit_mentions(digit: int, rng: np.random.Generator) -> dict[str, str]:
    """Ways to name one handwritten `digit`: singular with article, bare, definite, plural and counted plural."""
    word, numeral, plural_word = DIGIT_WORDS[digit], str(digit), DIGIT_PLURALS[digit]
    adjective = choose(rng, DIGIT_ADJECTIVES)
    form = choose(rng, [word, word, numeral])  # words are more common than numerals in prose
    singular = choose(rng, [f"a {word}", f"a {numeral}", f"a {adjective} {form}", f"the digit {form}",
                            f"a handwritten {form}", f"a {word}", f"a {numeral}"])  # fmt: skip
    plural = choose(rng, [plural_word, plural_word, f"{numeral}s", f"{numeral}s", f"{numeral}'s",
                          f"{adjective} {plural_word}", f"handwritten {plural_word}",
                          f"{adjective} {numeral}s"])  # fmt: skip
    how_many = choose(rng, ["two", "three", "four", "five", "a few", "several", "a row of", "dozens of", "a dozen",
                            "a whole line of", "ten", "a couple of"])  # fmt: skip
    size = choose(rng, ["", "little ", "tiny ", "wobbly ", "neat "])
    counted = f"{how_many} {size}{choose(rng, [plural_word, numeral + 's'])}"
    return {"a": singular, "w": choose(rng, [word, word, numeral]), "n": numeral, "pl": plural, "counted": counted,
            "adjective": adjective}  # fmt: skip


def digit_sentence(rng: np.random.Generator) -> str:
    """A sentence that names one or two handwritten digits (often a pair that people confuse)."""
    if rng.random() < 0.6:
        first, second = CONFUSED[rng.integers(len(CONFUSED))][:: choose(rng, [1, -1])]
    else:
        first, second = rng.choice(10, size=2, replace=False).tolist()
    one, other = digit_mentions(first, rng), digit_mentions(second, rng)
    writer, poss = choose(rng, WRITERS)
    fields = dict(a=one["a"], a2=other["a"], w=one["w"], w2=other["w"], n=one["n"], n2=other["n"], pl=one["pl"],
                  pl2=other["pl"], Pl=capitalised(one["pl"]), counted=one["counted"], adj=one["adjective"],
                  A_adj=f"A {one['adjective']} {one['w']}", feature=choose(rng, DIGIT_FEATURES[first]),
                  Writer=writer, poss=poss, Poss_cap=capitalised(poss), doc=choose(rng, DOCUMENTS),
                  field=choose(rng, FIELDS), tool=choose(rng, TOOLS), Machine=choose(rng, MACHINES))  # fmt: skip
    event = rng.random() < len(DIGIT_EVENT_TEMPLATES) / (len(DIGIT_EVENT_TEMPLATES) + len(DIGIT_TEMPLATES))
    template = choose(rng, DIGIT_EVENT_TEMPLATES if event else DIGIT_TEMPLATES)
    sentence = capitalised(with_articles(template.format(**fields)))
    if event and rng.random() < 0.25:  # "One day, the scanner read a 7 as a 1."
        sentence = after_opener(choose(rng, EVENT_OPENERS if rng.random() < 0.5 else PLAIN_OPENERS), sentence)
    return sentence


def number_trap_sentence(rng: np.random.Generator) -> str:
    """A sentence with number words (or numerals) that count, label or idiomise, and no digit as a written glyph."""
    if rng.random() < 0.5:
        return f"{choose(rng, TRAP_OPENERS)}, {choose(rng, TRAP_CLAUSES)}."
    count = choose(rng, COUNT_WORDS)
    fields = dict(Count=count, count=count.lower(), count_numeral=str(rng.integers(2, 60)),
                  clock_numeral=str(rng.integers(5, 10)), page=str(rng.integers(2, 120)),
                  year=str(rng.integers(1890, 1960)), year2=str(rng.integers(1960, 2000)))  # fmt: skip
    return choose(rng, TRAP_SENTENCES).format(**fields)


def plain_sentence(rng: np.random.Generator, sentences, subjects, predicates) -> str:
    """A sentence of the example's world that names no class: a written one, or a subject and a predicate."""
    if rng.random() < 0.1:
        return choose(rng, sentences)
    sentence = f"{choose(rng, subjects)} {choose(rng, predicates)}."
    return after_opener(choose(rng, PLAIN_OPENERS), sentence) if rng.random() < 0.2 else sentence


def plain_digit_corpus_sentence(rng: np.random.Generator) -> str:
    """A sentence from the same world (writing, post, school, forms) with no number in it."""
    return plain_sentence(rng, PLAIN_SENTENCES, PLAIN_SUBJECTS, PLAIN_PREDICATES)


def digits_corpus(count: int, rng: np.random.Generator) -> tuple[list[tuple[str, str]], dict]:
    """The digits corpus: about 65% digit mentions, 15% number words in other roles only, 20% no number."""
    kinds = {
        "digit_mentions": (0.65, digit_sentence),
        "number_words_not_digits": (0.15, number_trap_sentence),
        "no_number": (0.20, plain_digit_corpus_sentence),
    }
    return mixed_corpus(kinds, count, rng)


# ---------------------------------------------------------------------------------------------------------------------
# shapes: images

SHAPES = ("circle", "square", "triangle", "star", "heart", "cross", "arrow", "crescent", "hexagon", "diamond")
UPRIGHT_SHAPES = {"heart": 25.0}  # shapes that look wrong upside down: rotation within +-degrees; others turn freely


def regular_polygon(corners: int, start_degrees: float = 90.0) -> np.ndarray:
    """Corners of a regular polygon on the unit circle."""
    angles = np.radians(start_degrees + 360.0 * np.arange(corners) / corners)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def star_outline(rng: np.random.Generator) -> np.ndarray:
    """A five-pointed star: outer points on the unit circle, inner ones at 38-48% of it."""
    radii = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.48))
    angles = np.radians(90.0 + 36.0 * np.arange(10))
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def heart_outline(_rng=None) -> np.ndarray:
    """The classic parametric heart, point up at the bottom (image y grows downwards)."""
    t = np.linspace(0.0, 2.0 * np.pi, 120, endpoint=False)
    x = 16.0 * np.sin(t) ** 3
    y = -(13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y], axis=1)


def cross_outline(rng: np.random.Generator) -> np.ndarray:
    """A plus-shaped cross with arms of random thickness."""
    a = rng.uniform(0.25, 0.38)
    return np.array([(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a),
                     (-a, -a)], dtype=float)  # fmt: skip


def arrow_outline(rng: np.random.Generator) -> np.ndarray:
    """An arrow pointing right: a shaft and a triangular head."""
    shaft, head, neck = rng.uniform(0.14, 0.24), rng.uniform(0.45, 0.6), rng.uniform(0.05, 0.3)
    return np.array([(-1, -shaft), (neck, -shaft), (neck, -head), (1, 0), (neck, head), (neck, shaft), (-1, shaft)])


def diamond_outline(rng: np.random.Generator) -> np.ndarray:
    """A rhombus clearly taller than wide (so that no turn of a square looks like it)."""
    width = rng.uniform(0.5, 0.65)
    return np.array([(0, -1), (width, 0), (0, 1), (-width, 0)], dtype=float)


OUTLINES = {
    "square": lambda rng: regular_polygon(4, 45.0),
    "triangle": lambda rng: regular_polygon(3, -90.0),
    "hexagon": lambda rng: regular_polygon(6, 0.0),
    "star": star_outline,
    "heart": heart_outline,
    "cross": cross_outline,
    "arrow": arrow_outline,
    "diamond": diamond_outline,
}


def fitted(points: np.ndarray, degrees: float, radius: float, centre: tuple[float, float]) -> list[tuple]:
    """`points` centred on their bounding box, scaled to fit a circle of `radius`, turned and moved to `centre`."""
    points = points - (points.min(axis=0) + points.max(axis=0)) / 2.0
    points = points / np.linalg.norm(points, axis=1).max() * radius
    turn = math.radians(degrees)
    rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    placed = points @ rotation.T + np.asarray(centre)
    return [tuple(point) for point in placed.tolist()]


def distinct_colours(rng: np.random.Generator) -> tuple[tuple, tuple]:
    """A shape colour and a background colour far enough apart in colour and brightness."""
    luma = np.array([0.299, 0.587, 0.114])
    while True:
        shape, background = rng.integers(0, 256, size=(2, 3))
        if (np.linalg.norm(shape - background) >= MIN_COLOUR_DISTANCE
                and abs(float(luma @ (shape - background))) >= MIN_LUMA_DIFFERENCE):  # fmt: skip
            return tuple(shape.tolist()), tuple(background.tolist())


def shape_mask(shape: str, size: int, radius: float, centre: tuple[float, float], degrees: float, rng) -> Image.Image:
    """A `size`x`size` 'L' mask, 255 inside the shape."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = centre
    if shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
    elif shape == "crescent":  # a disc with a smaller, offset disc taken out; the bite faces the turn's direction
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
        inner, offset = radius * rng.uniform(0.75, 0.9), radius * rng.uniform(0.35, 0.5)
        ix, iy = cx + offset * math.cos(math.radians(degrees)), cy + offset * math.sin(math.radians(degrees))
        draw.ellipse((ix - inner, iy - inner, ix + inner, iy + inner), fill=0)
    else:
        draw.polygon(fitted(OUTLINES[shape](rng), degrees, radius, centre), fill=255)
    return mask


def shape_image(shape: str, rng: np.random.Generator, size: int = SHAPE_SIZE) -> Image.Image:
    """One `size`x`size` RGB picture of `shape`: random colours, size (40-90% of the image), position and rotation."""
    big = size * SUPERSAMPLE
    radius = rng.uniform(0.4, 0.9) * big / 2.0
    centre = (rng.uniform(radius, big - radius), rng.uniform(radius, big - radius))
    limit = UPRIGHT_SHAPES.get(shape)
    degrees = rng.uniform(-limit, limit) if limit else rng.uniform(0.0, 360.0)
    colour, background = distinct_colours(rng)
    canvas = Image.new("RGB", (big, big), background)
    canvas.paste(Image.new("RGB", (big, big), colour), mask=shape_mask(shape, big, radius, centre, degrees, rng))
    return canvas.resize((size, size), Image.Resampling.LANCZOS)


def write_shape_images(images_dir: Path, rng: np.random.Generator, train: int, test: int) -> dict:
    """Writes images/<split>/<shape>/<shape>_<i>.png, `train` and `test` per shape; returns the counts."""
    counts = {"train": 0, "test": 0}
    for split, per_class in (("train", train), ("test", test)):
        for shape in SHAPES:
            for i in range(per_class):
                write_png(shape_image(shape, rng), images_dir / split / shape / f"{shape}_{i:03d}.png")
                counts[split] += 1
    return counts


# ---------------------------------------------------------------------------------------------------------------------
# shapes: corpus

SHAPE_PLURALS = {"cross": "crosses"}
COLOURS = ["red", "blue", "yellow", "green", "white", "black", "gold", "silver", "orange", "purple", "pink", "navy",
           "turquoise", "pale green", "bright red", "dark blue", "lemon yellow", "grey", "crimson",
           "teal"]  # fmt: skip
JEWELLERY = ["silver", "gold", "enamel", "brass", "copper", "glass", "jade", "amber", "rose-gold", "pewter"]
SWEETS = ["sugar", "chocolate", "marzipan", "icing", "fondant", "candied"]
CRAFTS = ["felt", "patchwork", "embroidered", "sequinned", "appliqued", "beaded"]
MAKERS = ["My aunt", "The baker", "Our neighbour", "The children", "The sign painter", "My sister", "Grandpa",
          "The designer", "A street artist", "The jeweller", "The tiler", "The council", "The quilter", "Dad",
          "The art teacher", "She", "He", "We", "They", "The kids next door"]  # fmt: skip
COUNTS = ["two", "three", "four", "five", "six", "seven", "a row of", "a ring of", "dozens of", "a few", "several"]
SHAPE_TEMPLATES = [
    "The flag has {a_colour} on a {colour2} background.", "The club badge is {a_colour} inside {a2}.",
    "{Maker} cut the biscuit dough into {pl} and {pl2}.", "The bakery sells gingerbread {pl} at Christmas.",
    "The quilt alternates {colour} {pl} with {colour2} {pl2}.", "The pendant is a tiny {jewel} {s} on a chain.",
    "{A_colour} painted on the road marks the start of the cycle lane.",
    "The bathroom floor is tiled with {colour} {pl}.",
    "The road sign was {a_colour} with a {colour2} {s2} in the middle.",
    "The company logo is just {a_colour}.", "{Maker} drew {a} on the steamed-up window.",
    "The kite had {a_colour} sewn near its tail.", "Every tile in the mosaic is a tiny {colour} {s}.",
    "The children stuck paper {pl} all over the classroom window.", "The earrings are little {jewel} {pl}.",
    "The map marks the campsite with {a_colour}.", "The stained-glass window is full of {colour} {pl} and {pl2}.",
    "The wallpaper is covered in tiny {colour} {pl}.", "The pharmacy sign is a glowing {colour} {s}.",
    "The cake was decorated with {sweet} {pl}.", "{Maker} painted {a_colour} on the garden gate.",
    "The cookie cutter set came with {a}, {a2} and {a3}.", "The stamp in my passport shows a small {s}.",
    "The magnet on the fridge is {a_colour}.", "On the club flag there are {count} {colour} {pl}.",
    "The tablecloth has a pattern of {pl} and {pl2}.", "The board game uses wooden {pl} as counters.",
    "{A_colour} on the map shows where you are.", "{Maker} sewed {a_colour_material} onto the cushion.",
    "The brooch is {a_jewel} set with {colour} stones.", "The label says the box holds {count} chocolate {pl}.",
    "Each lantern was cut in the shape of {a}.", "The banner on the flagpole shows {a_colour}.",
    "The tiles around the sink form {a_colour}.", "The logo mixes {a} and {a2}.",
    "{Maker} chalked {count} {pl} on the pavement for a game.", "The playground is painted with {colour} {pl}.",
    "The biscuit tin is full of iced {pl}.", "{Maker} tried to draw a perfect {s} without a ruler.",
    "On the airline's tail fin is {a_colour}.", "The rug has {a_colour} woven into the middle.",
    "{Maker} bought a box of {colour} {pl} for the scrapbook.", "The necklace has a {jewel} {s} at its centre.",
    "Our street sign has {a_colour} in one corner.", "The loyalty card is stamped with {a} for every coffee.",
    "{Pl} and {pl2} are the first shapes children learn to draw.", "The shop window was full of {colour} {pl}.",
    "The ice cubes from the new tray come out as little {pl}.", "The old coin has {a} stamped on one side.",
    "The sticker sheet has {pl}, {pl2} and {pl3}.", "{Maker} iced every cupcake with a {colour} {s}.",
    "The tiles by the door are {colour} {pl} with {colour2} edges.",
    "A {colour} {s} marks the entrance to the car park.",
    "The football club's crest is {a_colour} over {a2}.", "The pieces of the puzzle are all {pl}.",
    "The jeweller engraved a tiny {s} inside the ring.", "The emergency exit is marked with a white arrow.",
    "The night sky on the poster is dotted with silver stars.", "The honeycomb tiles in the hall are hexagons.",
    "The moon was a thin crescent above the roofs.", "A red cross on a white background means first aid.",
    "The card game uses hearts, clubs, diamonds and spades.", "{Maker} played the queen of hearts and won the trick.",
    "The ace of diamonds was missing from the pack.", "The road arrows tell drivers which lane to use.",
    "The traffic warden pointed at the arrow painted on the road.", "The quilt block is made of four triangles.",
    "Her charm bracelet has a heart, a star and a crescent.", "The lollipops came in circles and hearts.",
    "{Maker} baked {count} cookies shaped like {pl}.", "The cookies were iced to look like {colour} {pl}.",
    "The cookie jar has {a_colour} painted on the lid.", "{Maker} pressed {a} into every cookie before baking.",
    "The patchwork quilt is a grid of {colour} {pl}.", "The road marking before the junction is a {colour} {s}.",
    "The playing card showed {count} {pl} in {colour} ink.", "The logo on the van is {a_colour} with a {s2} inside.",
    "The sign at the crossroads was a {colour} arrow pointing left.",
    "The flag is {colour2} with {count} {colour} {pl}.",
]  # fmt: skip
PLAIN_SHAPE_PREDICATES = [
    "baked biscuits for the school fair", "painted the garden fence green", "sewed a patch onto the cushion",
    "hung the flag from the balcony", "repainted the road markings outside the school", "shuffled the deck of cards",
    "glued the loose tiles back onto the wall", "designed a new logo for the bakery", "ironed the quilt",
    "sorted the beads by colour", "framed the old poster", "chose a font for the shop sign",
    "polished the silver necklace", "rolled out the pastry", "laid new tiles in the hallway",
    "bought a tin of paint", "knitted a blanket for the baby", "drew a map of the village",
    "dealt the cards for another game", "put the biscuits in a tin", "fixed the broken sign above the shop",
    "stitched the edges of the quilt", "mixed the icing with a spoon", "painted a mural on the school wall",
    "lost an earring on the bus", "cleaned the stained-glass window", "sketched the church tower",
    "printed the posters for the fair", "decorated the cake with sprinkles", "swept the playground",
    "sold biscuits at the market", "repaired the jewellery box", "bought a new pack of cards",
    "tidied the craft cupboard",
    "sanded the old floorboards", "taught the class how to use a compass", "wrapped the presents in brown paper",
    "hung a new sign over the door", "picked a pattern for the kitchen tiles", "gave the necklace to a friend",
    "collected badges from every town", "painted the shutters blue", "made lemonade for the fete",
    "counted the cookies on the tray", "glazed the pots before firing them", "traced the map onto thin paper",
]  # fmt: skip
PLAIN_SHAPE_SENTENCES = [
    "The paint on the sign had peeled in the sun.", "The bakery opens early on Saturdays.",
    "Road markings wear out quickly on busy streets.", "The quilt took the whole winter to finish.",
    "Nobody could agree on the colours for the new flag.", "The tiles in the kitchen are easy to clean.",
    "The logo looks better in black and white.", "The jeweller closed the shop for lunch.",
    "The card players argued about the rules.", "Fresh biscuits smell wonderful.",
    "The sign was too small to read from the road.", "The mosaic was restored last year.",
]  # fmt: skip


def shape_plural(shape: str) -> str:
    """The plural of a shape's name: "cross" -> "crosses", "star" -> "stars"."""
    return SHAPE_PLURALS.get(shape, shape + "s")


def shape_sentence(rng: np.random.Generator) -> str:
    """A sentence that mentions one to three shapes (singular or plural) in an everyday setting."""
    s, s2, s3 = (SHAPES[i] for i in rng.choice(len(SHAPES), size=3, replace=False))
    colour, colour2 = (COLOURS[i] for i in rng.choice(len(COLOURS), size=2, replace=False))
    jewel = choose(rng, JEWELLERY)
    fields = dict(s=s, s2=s2, a=f"a {s}", a2=f"a {s2}", a3=f"a {s3}", pl=shape_plural(s), pl2=shape_plural(s2),
                  pl3=shape_plural(s3), Pl=capitalised(shape_plural(s)), colour=colour, colour2=colour2,
                  a_colour=f"a {colour} {s}", A_colour=f"A {colour} {s}", a_jewel=f"a {jewel} {s}",
                  a_colour_material=f"a {colour} {choose(rng, CRAFTS)} {s}", jewel=jewel, sweet=choose(rng, SWEETS),
                  Maker=choose(rng, MAKERS), count=choose(rng, COUNTS))  # fmt: skip
    return capitalised(with_articles(choose(rng, SHAPE_TEMPLATES).format(**fields)))


def plain_shape_corpus_sentence(rng: np.random.Generator) -> str:
    """A sentence from the same world (baking, signs, crafts, cards) that names no shape."""
    return plain_sentence(rng, PLAIN_SHAPE_SENTENCES, MAKERS, PLAIN_SHAPE_PREDICATES)


# Shape words in their other senses (people, places, feelings, gems, verbs, names, idioms): the traps of `--trap_share`.
SHAPE_TRAPS = [
    "The movie star {did} after the premiere.", "{Name} was the star of the show {when}.",
    "The team's star striker {did}.", "{Name} is a rising star of the {scene} scene.",
    "The hotel has four stars and {feature}.", "We lay on the grass and watched the stars {when}.",
    "{Name} had a heart attack {when}.", "{Name} learned the whole poem by heart.",
    "The café is in the heart of the {place}.", "My heart sank when {event}.",
    "The doctor listened to {name_poss} heart {when}.", "{Name} has a heart of gold.",
    "{Name} wore a diamond ring to the {party}.", "The diamond necklace was stolen from the {place} {when}.",
    "They celebrated their diamond wedding anniversary {when}.", "The players ran out onto the baseball diamond.",
    "Look both ways before you cross the road to the {place}.", "{Name} was cross with us for being late.",
    "A mule is a cross between a horse and a donkey.", "The Red Cross sent volunteers to the {place}.",
    "{Name} crosses the bridge to the {place} every morning.", "Don't cross {name} when {event}.",
    "They met in the town square {when}.", "The flat is sixty square metres, with {feature}.",
    "After {event}, we were back to square one.", "{Name} won the race fair and square.",
    "The square root of nine is three.", "{Name} waited in Times Square {when}.",
    "We have come full circle since {event}.", "{Name} has a small circle of friends in the {place}.",
    "Vultures circle above the field {when}.", "The inner circle of the party met {when}.",
    "Circle the date of the {party} in your diary.", "It was a love triangle from the start.",
    "The Bermuda Triangle is a stretch of the Atlantic.", "{Name} fired an arrow at the target {when}.",
    "Cupid's arrow struck {name} at the {party}.", "The road ran straight as an arrow to the {place}.",
    "{Name} lives on a quiet crescent near the {place}.", "The Red Crescent opened a clinic in the {place}.",
    "The Hexagon Theatre reopened {when}.", "The Diamond League meeting was cancelled {when}.",
    "{Name} bought shares in Star Airlines {when}.", "The Crescent Hotel was fully booked for the {party}.",
]  # fmt: skip
TRAP_FILLS = {
    "Name": ["Anna", "Tom", "My uncle", "Our coach", "The mayor", "Priya", "Mr Okafor", "Lena", "Grandma", "Sam"],
    "did": ["signed autographs", "gave a long interview", "left through the back door", "thanked the crew"],
    "when": ["last night", "on Friday", "last spring", "in 2019", "after the match", "before the holidays"],
    "scene": ["jazz", "comedy", "tennis", "theatre", "chess"],
    "feature": ["a rooftop pool", "a quiet garden", "free parking", "a view of the bay"],
    "place": ["old town", "harbour", "museum", "station", "market", "library", "city"],
    "event": ["the train left", "the lights went out", "the results came in", "the shop closed"],
    "party": ["wedding", "gala", "reunion", "birthday party", "awards night"],
}  # fmt: skip


TRAP_KIND = "shape_words_in_other_senses"


def shape_trap_sentence(rng: np.random.Generator) -> str:
    """A sentence that uses a shape's name in another sense ("the movie star", "by heart", "cross the road")."""
    fills = {key: choose(rng, options) for key, options in TRAP_FILLS.items()}
    fills.update(name=fills["Name"] if fills["Name"][0].isupper() and " " not in fills["Name"] else "him",
                 name_poss=fills["Name"].lower() + "'s" if " " in fills["Name"] else fills["Name"] + "'s")  # fmt: skip
    return choose(rng, SHAPE_TRAPS).format(**fills)


def shapes_corpus(
    count: int, rng: np.random.Generator, trap_share: float = 0.0
) -> tuple[list[tuple[str, str]], dict]:
    """The shapes corpus: about 80% shape mentions (less `trap_share`), 20% sentences with no shape word, and
    `trap_share` of sentences that use shape words in other senses."""
    kinds = {"shape_mentions": (0.8 - trap_share, shape_sentence), "no_shape": (0.2, plain_shape_corpus_sentence)}
    if trap_share > 0:
        kinds[TRAP_KIND] = (trap_share, shape_trap_sentence)
    return mixed_corpus(kinds, count, rng)


# ---------------------------------------------------------------------------------------------------------------------
# Command line

EXAMPLES = {
    "digits": dict(classes=[str(d) for d in range(10)], size=DIGIT_SIZE, mode="L", corpus=digits_corpus),
    "shapes": dict(classes=list(SHAPES), size=SHAPE_SIZE, mode="RGB", corpus=shapes_corpus),
}


def prepare_output_dir(output_dir: Path, overwrite: bool) -> None:
    """Makes `output_dir`; refuses a non-empty one unless `overwrite`, which clears only what this script writes."""
    if output_dir.exists() and not output_dir.is_dir():
        sys.exit(f"error: {output_dir} exists and is not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        if not overwrite:
            sys.exit(f"error: {output_dir} is not empty; pass --overwrite to replace its images/ and corpus.txt")
        shutil.rmtree(output_dir / "images", ignore_errors=True)
        (output_dir / "corpus.txt").unlink(missing_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)


def write_corpus(sentences: list[str], path: Path) -> None:
    """Writes one sentence per line (through a temporary file, so a half-written corpus never lies there)."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    temporary.replace(path)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--example", required=True, choices=sorted(EXAMPLES), help="which example to write")
    parser.add_argument("--output_dir", required=True, help="folder for images/ and corpus.txt")
    parser.add_argument("--sentences", type=int, default=3000, help="lines of corpus.txt (default 3000)")
    parser.add_argument("--train_per_class", type=int, default=60, help="shapes: training images per class")
    parser.add_argument("--test_per_class", type=int, default=30, help="shapes: test images per class")
    parser.add_argument("--test_share", type=float, default=TEST_SHARE, help="digits: share of each class for test")
    parser.add_argument("--trap_share", type=float, default=0.0,
                        help="shapes: share of sentences that use shape words in other senses ('a movie star', 'by "
                             "heart'); with it, corpus_without_traps.txt holds the same corpus without them")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace images/ and corpus.txt there")
    parser.add_argument("--output", help="also write the JSON summary to this file")
    args = parser.parse_args(argv)
    if args.sentences < 1 or args.train_per_class < 1 or args.test_per_class < 1 or not 0 < args.test_share < 1:
        parser.error("--sentences and the per-class counts must be positive, --test_share between 0 and 1")
    if not 0 <= args.trap_share < 0.8 or (args.trap_share and args.example != "shapes"):
        parser.error("--trap_share is for --example shapes, in [0, 0.8)")
    output_dir = Path(args.output_dir)
    prepare_output_dir(output_dir, args.overwrite)
    example = EXAMPLES[args.example]
    image_rng, text_rng = (np.random.default_rng(seed) for seed in np.random.SeedSequence(args.seed).spawn(2))
    if args.example == "digits":
        images = write_digit_images(output_dir / "images", image_rng, args.test_share)
    else:
        images = write_shape_images(output_dir / "images", image_rng, args.train_per_class, args.test_per_class)
    corpus, kinds = example["corpus"](args.sentences, text_rng, **({"trap_share": args.trap_share} if args.trap_share else {}))
    sentences = [sentence for _, sentence in corpus]
    write_corpus(sentences, output_dir / "corpus.txt")
    if args.trap_share:
        untrapped = [sentence for kind, sentence in corpus if kind != TRAP_KIND]
        write_corpus(untrapped, output_dir / "corpus_without_traps.txt")
    summary = {
        "example": args.example, "output_dir": str(output_dir), "data_dir": str(output_dir / "images"),
        "classes": example["classes"], "image_size": [example["size"], example["size"]], "image_mode": example["mode"],
        "train_images": images["train"], "test_images": images["test"], "corpus": str(output_dir / "corpus.txt"),
        "sentences": len(sentences), "unique_sentences": len(set(sentences)), "sentence_kinds": kinds,
        **({"corpus_without_traps": str(output_dir / "corpus_without_traps.txt")} if args.trap_share else {}),
        "seed": args.seed,
    }  # fmt: skip
    return report(summary, args.output)


if __name__ == "__main__":
    main()
