"""Writes the shipped concept vocabularies (processing/data/coco80.json, fashion_mnist.json) from labels + synonyms.

Plural and singular forms come from lemminflect; the JSON files hold the final forms, so loading them needs nothing.
"""

import argparse
from pathlib import Path

from processing.concepts import ConceptVocabulary


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", default=str(Path(__file__).resolve().parents[1] / "processing" / "data"))
    args = parser.parse_args()
    for name, labels, synonyms in (
        ("coco80", COCO80, COCO80_SYNONYMS),
        ("fashion_mnist", FASHION_MNIST, FASHION_MNIST_SYNONYMS),
    ):
        vocabulary = ConceptVocabulary.from_labels(labels, synonyms)
        path = Path(args.output_dir) / f"{name}.json"
        vocabulary.to_json(path)
        print(f"{path}: {vocabulary}")


if __name__ == "__main__":
    main()
