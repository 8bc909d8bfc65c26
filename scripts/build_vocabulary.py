"""Make a concept vocabulary (concepts.json) from class names: the words that name each visual concept in text.

Class names come from the command line, a file (one per line), a labelled dataset's `ClassLabel` feature, or a
preset (coco80, fashion_mnist: the two shipped with the package). Each class name becomes a concept whose surface
forms are generated as build_gallery.py does when it is given no vocabulary:
- the name as text would write it: "Ankle_boot" -> "ankle boot", "T - shirt / top" -> "t-shirt" with "top";
- singular and plural ("teddy bears", "mice", "crosses", "twos"), by lemminflect, else the regular English plural;
- numbers as numerals and words: "7" also matches "7s", "seven", "sevens" (and "seven" also "7");
- synonyms from --synonyms (a JSON of class name -> [words]) and, with --wordnet_synonyms, the other lemmas of the
  name's most frequent WordNet sense (Debian's wordnet-base: "sofa" -> "couch", "lounge"; check what it adds).

The format (a JSON object; processing.ConceptVocabulary reads and writes it):
  {"format_version": 1,
   "labels": ["7", "ankle boot"],                                  concept ids in order: labels[i] is concept i
   "concepts": {"7": ["7", "7s", "seven", "sevens"], ...},          each label's surface forms, lower case; a form
                                                                   belongs to one concept; "t-shirt" also matches
                                                                   "T shirt" and "tshirt"
   "exclude": ["at sixes and sevens"]}                             optional: phrases in which nothing is matched
Edit the file to add forms by hand (other spellings, brand names); --exclude adds phrases.

Words that are also function words or numbers ("one", "seven", "7") are matched only where they name the thing:
after a determiner or a symbol word ("a seven", "the digit 7"), and not before "of" or a noun ("seven people",
"one day"); "one" not as a pronoun ("no one", "the one on the left"). See processing/concepts.py.

Examples:
  python scripts/build_vocabulary.py --class_names cat dog "teddy bear" --output concepts.json
  python scripts/build_vocabulary.py --dataset_name my-images --output concepts.json --exclude "at sixes and sevens"
  python scripts/build_vocabulary.py --preset coco80 --output processing/data/coco80.json
The last line on stdout is one JSON object with the summary.
"""

import argparse
import json
import sys
from pathlib import Path

from vlmixer.processing.concepts import ConceptVocabulary, concept_label
from vlmixer.processing.sources import DataError, load_labelled_images
from vlmixer.processing.tagging import wordnet_synonyms

from vlmixer.scripts.figures import report


COCO80 = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant",
    "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli",
    "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet",
    "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
]  # fmt: skip

COCO80_SYNONYMS = {
    "person": ["man", "woman", "boy", "girl", "child", "kid", "people", "guy", "lady", "adult", "pedestrian"],
    "bicycle": ["bike"],
    "motorcycle": ["motorbike", "scooter"],
    "airplane": ["plane", "aeroplane", "jet", "aircraft", "airliner"],
    "boat": ["ship", "sailboat", "canoe", "kayak"],
    "fire hydrant": ["hydrant"],
    "cat": ["kitten", "kitty"],
    "dog": ["puppy"],
    "sheep": ["lamb"],
    "cow": ["cattle", "calf", "bull"],
    "backpack": ["rucksack"],
    "handbag": ["purse"],
    "tie": ["necktie"],
    "suitcase": ["luggage"],
    "skis": ["ski"],
    "sports ball": ["ball", "soccer ball", "football", "basketball", "tennis ball", "volleyball"],
    "baseball glove": ["mitt", "baseball mitt"],
    "tennis racket": ["racket", "racquet", "tennis racquet"],
    "cup": ["mug"],
    "donut": ["doughnut"],
    "couch": ["sofa"],
    "potted plant": ["houseplant", "plant"],
    "dining table": ["table"],
    "tv": ["television", "tv set"],
    "remote": ["remote control"],
    "cell phone": ["phone", "cellphone", "mobile phone", "smartphone"],
    "refrigerator": ["fridge"],
    "teddy bear": ["teddy"],
    "hair drier": ["hair dryer", "hairdryer", "blow dryer"],
}

# Class ids 0-9 in order. "top" is left out of t-shirt's forms: "on top of" would be a false grounding.
FASHION_MNIST = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
FASHION_MNIST_SYNONYMS = {
    "t-shirt": ["tee", "tee shirt"],
    "trouser": ["pants", "jeans", "slacks"],
    "pullover": ["sweater", "jumper", "sweatshirt"],
    "dress": ["gown"],
    "coat": ["jacket", "overcoat", "parka"],
    "sandal": ["flip-flop"],
    "shirt": ["blouse"],
    "sneaker": ["running shoe", "tennis shoe", "trainer shoe"],
    "bag": ["handbag", "purse", "tote", "backpack"],
    "ankle boot": ["boot", "bootie"],
}


PRESETS = {"coco80": (COCO80, COCO80_SYNONYMS), "fashion_mnist": (FASHION_MNIST, FASHION_MNIST_SYNONYMS)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--class_names", nargs="+", metavar="NAME", help="the class names, in class order")
    source.add_argument("--class_names_file", metavar="FILE", help="a text file with one class name per line")
    source.add_argument("--dataset_name", metavar="NAME", help="a labelled dataset: its ClassLabel names")
    source.add_argument("--preset", choices=sorted(PRESETS), help="a shipped list of labels and synonyms")
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument("--split", default=None, help="default: the only split, else 'train'")
    parser.add_argument("--label_column", default=None, help="default: the dataset's ClassLabel feature")
    parser.add_argument("--synonyms", metavar="JSON", help="a JSON object: class name -> list of extra words")
    parser.add_argument("--wordnet_synonyms", action="store_true", help="add the first WordNet sense's other lemmas")
    parser.add_argument("--exclude", action="append", default=[], metavar="PHRASE",
                        help="a phrase in which no form is matched (repeatable)")  # fmt: skip
    parser.add_argument("--output", required=True, help="the concepts.json to write")
    return parser.parse_args(argv)


def class_names_of(args) -> tuple[list[str], dict[str, list[str]]]:
    """The class names, and the preset's synonyms when a preset is used."""
    if args.preset:
        labels, synonyms = PRESETS[args.preset]
        return list(labels), {key: list(value) for key, value in synonyms.items()}
    if args.class_names_file:
        lines = Path(args.class_names_file).read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip()], {}
    if args.dataset_name:
        source = load_labelled_images(args.dataset_name, args.dataset_config_name, args.split, image_column="",
                                      label_column=args.label_column, prefer="train")  # fmt: skip
        return source.class_names, {}
    return args.class_names, {}


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        names, synonyms = class_names_of(args)
        if args.synonyms:
            given = json.loads(Path(args.synonyms).read_text(encoding="utf-8"))
            if not isinstance(given, dict) or not all(isinstance(v, list) for v in given.values()):
                raise ValueError(f"{args.synonyms} must hold a JSON object of class name -> list of words.")
            for name, words in given.items():
                synonyms.setdefault(name, []).extend(words)
        if args.wordnet_synonyms:
            for name in names:
                synonyms.setdefault(name, []).extend(wordnet_synonyms(concept_label(name)))
        vocabulary = ConceptVocabulary.from_class_names(names, synonyms, args.exclude)
    except (OSError, ValueError, DataError) as error:  # DataError is a ValueError; json errors are too
        sys.exit(f"build_vocabulary: {error}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    vocabulary.to_json(args.output)
    for label in vocabulary.labels:
        print(f"  {label}: {', '.join(vocabulary.forms(label))}")
    return report({"output": args.output, "concepts": len(vocabulary), "labels": vocabulary.labels,
                   "surface_forms": sum(len(vocabulary.forms(label)) for label in vocabulary.labels),
                   "exclude": vocabulary.exclude})  # fmt: skip


if __name__ == "__main__":
    main()
