"""Write a text-only corpus that mentions the Fashion-MNIST concepts, written with no image in sight (unpaired).

Two sources:
  - generated sentences: varied templates (shopping, travel, weather, laundry, fashion news...), colours, materials,
    people and places, naming clothes by any of their surface forms (a sweater, jumpers, trainers, jeans...);
  - real English: WordNet noun glosses that mention a concept (Debian's wordnet-base, when installed), e.g. "a backless
    sandal held to the foot by a thong between the big toe and the second toe".
Sentences in the zero-shot evaluation's phrasings ("a photo of ...", "a picture showing ...") are kept out.

The last line on stdout is one JSON object with the counts (also written to --output).
"""

import argparse
import re
from pathlib import Path

import numpy as np

from vlmixer.processing import ConceptVocabulary
from vlmixer.processing.tagging import WORDNET_DIR

from vlmixer.scripts.figures import report


EVALUATION_PHRASINGS = re.compile(r"^\s*(a|an) (photo|picture|image) (of|showing)\b", re.IGNORECASE)

NAMES = {  # how people write about each class; one is drawn per mention
    "t-shirt": ["t-shirt", "T-shirt", "tee", "tee shirt", "tshirt"],
    "trouser": ["pair of trousers", "pair of pants", "pair of jeans", "pair of slacks"],
    "pullover": ["pullover", "sweater", "jumper", "sweatshirt"],
    "dress": ["dress", "gown"],
    "coat": ["coat", "jacket", "overcoat", "parka"],
    "sandal": ["sandal", "flip-flop"],
    "shirt": ["shirt", "blouse"],
    "sneaker": ["sneaker", "running shoe", "tennis shoe"],
    "bag": ["bag", "handbag", "purse", "tote", "backpack"],
    "ankle boot": ["ankle boot", "boot", "bootie"],
}
COLOURS = ["black", "white", "red", "blue", "navy", "grey", "beige", "green", "pink", "brown", "yellow", "striped",
           "checked", "dark", "pale", "bright", "faded", "plain"]
MATERIALS = ["cotton", "wool", "leather", "denim", "linen", "silk", "canvas", "suede", "knitted", "waterproof"]
PEOPLE = ["She", "He", "My sister", "The teacher", "Our neighbour", "A tourist", "The old man", "The girl",
          "My brother", "The customer", "Grandma", "The student", "A woman", "The boy", "Everyone"]
PLACES = ["at the market", "in the shop window", "on the train", "at the party", "in the closet", "on the beach",
          "at the office", "in the suitcase", "on the chair", "by the door", "at the wedding", "in the park"]
TEMPLATES = [
    "{person} bought a {colour} {item} {place}.",
    "{person} wore a {material} {item} and carried a {item2}.",
    "{person} forgot the {item} {place}.",
    "The {colour} {item} was on sale for half the price.",
    "{person} packed a {item}, a {item2} and a {item3} for the trip.",
    "A {material} {item} keeps you comfortable all day.",
    "There was a {colour} {item} lying {place}.",
    "{person} washed the {item} and hung it to dry.",
    "This season the designers showed {material} {plural} in every colour.",
    "{person} could not decide between the {item} and the {item2}.",
    "The {item} did not match the {colour} {item2}.",
    "{person} lent me a {item} because it was cold.",
    "Please put your {item} {place}.",
    "{person} spilled coffee on the new {item}.",
    "Nobody noticed the {colour} {item} {place}.",
    "{person} is looking for a {material} {item} that fits.",
    "{person} repaired the torn {item} with a needle.",
    "The shop sells {plural}, {plural2} and {plural3}.",
    "{person} ordered a {item} online but it was too small.",
    "It was raining, so {lower_person} put on a {item}.",
]  # fmt: skip
GENERIC_TEMPLATES = [  # for any concrete noun (a vocabulary other than Fashion-MNIST's)
    "{person} saw a {item} {place}.", "{person} talked about the {item} for an hour.",
    "There was a {item} next to the {item2}.", "{person} took the {item} home.",
    "Nobody expected a {item} {place}.", "{person} likes the {item} more than the {item2}.",
    "The {item} was still there in the morning.", "{person} showed me a {item} and a {item2}.",
    "We read an article about {plural} and {plural2}.", "{person} wrote a poem about a {item}.",
    "Is that {lower_person}'s {item}?", "The children asked about the {item} {place}.",
]  # fmt: skip
PLAIN = [  # sentences that mention no concept: CMC leaves them as they are
    "The meeting was moved to Thursday afternoon.", "Prices rose sharply over the winter.",
    "The train was twenty minutes late.", "She finished the book in one evening.",
    "The garden needs watering twice a week.", "He called his mother after lunch.",
]  # fmt: skip


def plural(name: str) -> str:
    if name.startswith("pair of "):
        return name.removeprefix("pair of ")
    return name + ("es" if name.endswith(("sh", "ch", "x", "ss")) else "s")


def with_articles(sentence: str) -> str:
    """"a overcoat" -> "an overcoat"."""
    return re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", sentence)


def generated_sentences(count: int, rng: np.random.Generator, names: dict = NAMES, templates: list = TEMPLATES) -> list[str]:
    """Sentences from `templates`, each mention naming a random concept by one of its `names`."""
    pick = lambda options: options[rng.integers(len(options))]  # noqa: E731
    classes = list(names)

    def item() -> str:
        return pick(names[pick(classes)])

    sentences = []
    for _ in range(count):
        person = pick(PEOPLE)
        fields = dict(person=person, lower_person=person.lower() if person in ("She", "He", "Everyone") else person,
                      colour=pick(COLOURS), material=pick(MATERIALS), place=pick(PLACES), item=item(), item2=item(),
                      item3=item(), plural=plural(item()), plural2=plural(item()), plural3=plural(item()))  # fmt: skip
        sentences.append(with_articles(pick(templates).format(**fields)))
    return sentences


def wordnet_glosses(vocabulary: ConceptVocabulary, wordnet_dir: str = WORDNET_DIR) -> list[str]:
    """Definitions and examples of WordNet nouns that mention a concept, as sentences; none without wordnet-base."""
    # Read straight from data.noun, not through nltk's reader (processing.tagging.open_wordnet): nltk builds all
    # 82,115 noun synsets, pointers and all, to hand out their glosses: 31 s here against 3.3 s, for 573 of these
    # 574 sentences.
    path = Path(wordnet_dir) / "data.noun"
    if not path.is_file():
        return []
    glosses = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(" ") or "|" not in line:  # the licence lines start with spaces
            continue
        for phrase in line.split("|", 1)[1].split(";"):
            phrase = phrase.strip().strip('"').strip()
            if len(phrase.split()) >= 4 and vocabulary.find(phrase):
                glosses.append(phrase[0].upper() + phrase[1:] + ("" if phrase.endswith(".") else "."))
    return sorted(set(glosses))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_file", required=True, help="the corpus, one sentence per line")
    parser.add_argument("--sentences", type=int, default=20_000, help="generated sentences")
    parser.add_argument("--plain_share", type=float, default=0.05, help="share of sentences with no concept")
    parser.add_argument("--vocabulary", default="fashion_mnist",
                        help="'fashion_mnist' (clothing templates) or a concepts JSON (generic templates, its forms)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="also write the JSON counts to this file")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    if args.vocabulary == "fashion_mnist":
        vocabulary = ConceptVocabulary.fashion_mnist()
        generated = generated_sentences(args.sentences, rng)
    else:
        vocabulary = ConceptVocabulary.from_json(args.vocabulary)
        forms = {label: set(vocabulary.forms(label)) for label in vocabulary.labels}
        singular = {label: sorted(f for f in forms[label] if plural(f) in forms[label]) or [label] for label in forms}
        generated = generated_sentences(args.sentences, rng, singular, GENERIC_TEMPLATES)
    glosses = wordnet_glosses(vocabulary)
    plain = [PLAIN[i % len(PLAIN)] for i in range(int(args.plain_share * args.sentences))]
    corpus = [s for s in generated + glosses + plain if not EVALUATION_PHRASINGS.match(s)]
    corpus = [corpus[i] for i in rng.permutation(len(corpus))]
    grounded = sum(1 for sentence in corpus if vocabulary.find(sentence))
    output = Path(args.output_file)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_suffix(output.suffix + ".tmp")
    temporary.write_text("\n".join(corpus) + "\n")
    temporary.replace(output)
    counts = {"sentences": len(corpus), "generated": len(generated), "wordnet_glosses": len(glosses),
              "plain": len(plain), "with_grounded_words": grounded, "file": str(output)}  # fmt: skip
    return report(counts, args.output)


if __name__ == "__main__":
    main()
