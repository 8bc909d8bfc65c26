"""Real photos, qualitatively: the unpaired recipe on scikit-image's photos, with tags from the ImageNet head.

1. The image-only corpus: the photos in scikit-image's wheel, cut into the whole image and a grid of cells, each
   tagged by the built-in EfficientNet-Lite0's ImageNet head (no human label, no caption); an ImageNet class is named
   by its nearest WordNet hypernym among the candidate labels (espresso -> coffee, missile -> rocket, tabby -> cat).
2. The text-only corpus: generic sentences naming the candidate labels, and WordNet glosses that mention them.
3. Pre-training from all-MiniLM-L6-v2 with cross-modal CutMix.
4. Each whole photo as "a <image>." against "a {label}." for every candidate label: a small table, with the ImageNet
   head's own top class for reference.

It is qualitative and transductive: there are few offline photos, so the gallery's cells come from the same photos
that are then classified whole; photos whose ImageNet tags name no candidate (astronaut, horse) have no patches,
which the table shows. The last line on stdout is one JSON object (also written to --output).
"""

import argparse
from pathlib import Path

import numpy as np
import torch

SCRIPTS = Path(__file__).resolve().parent

from vlmixer.scripts import build_gallery  # noqa: E402
from vlmixer.scripts import evaluate_zero_shot  # noqa: E402
from vlmixer.scripts.figures import report  # noqa: E402
from vlmixer.scripts import make_corpus  # noqa: E402
from vlmixer.scripts import pretrain  # noqa: E402


PHOTOS = {  # scikit-image loader -> what a person would call it
    "chelsea": "cat", "coffee": "coffee", "rocket": "rocket", "stereo_motorcycle": "motorcycle",
    "camera": "camera", "astronaut": "astronaut", "horse": "horse",
}  # fmt: skip
SYNONYMS = {"motorcycle": ["motorbike"], "camera": ["photographic camera"]}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/real_photos")
    parser.add_argument("--grid_size", type=int, default=3)
    parser.add_argument("--min_score", type=float, default=0.2, help="ImageNet head confidence to keep a region")
    parser.add_argument("--max_steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None)
    return parser.parse_args(argv)


def photo(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    image = image[0] if isinstance(image, tuple) else image  # stereo pairs: the left view
    return (image * 255).astype(np.uint8) if image.dtype == bool else image


def write_inputs(folder: Path) -> Path:
    """The photos as PNG files and the candidate labels as a concepts JSON; returns the vocabulary's path."""
    from PIL import Image

    from vlmixer.processing import ConceptVocabulary

    (folder / "photos").mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        Image.fromarray(photo(name)).save(folder / "photos" / f"{name}.png")
    vocabulary = folder / "concepts.json"
    ConceptVocabulary.from_labels(list(dict.fromkeys(PHOTOS.values())), SYNONYMS).to_json(vocabulary)
    return vocabulary


@torch.no_grad()
def classify_photos(model, processor, prompt: str) -> list[dict]:
    from vlmixer.processing.features import RegionFeatureExtractor
    from vlmixer.processing.tagging import ImageNetTagger

    labels = list(dict.fromkeys(PHOTOS.values()))
    photos = {name: photo(name) for name in PHOTOS}
    features = RegionFeatureExtractor("efficientnet-lite0", 224).encode_crops(list(photos.values()))
    whole = [[[0.0, 0.0, 1.0, 1.0]]] * len(PHOTOS)
    images = evaluate_zero_shot.embed(model, processor, [prompt.format("<image>")] * len(PHOTOS),
                                      [f[None] for f in features], whole, 64)  # fmt: skip
    texts = evaluate_zero_shot.embed(model, processor, [prompt.format(label) for label in labels], None, None, 64)
    probabilities = (images @ texts.T * model.contrastive.logit_scale.exp()).softmax(dim=-1)
    imagenet = ImageNetTagger(min_score=0.0)
    rows = []
    for (name, truth), row in zip(PHOTOS.items(), probabilities):
        order = row.argsort(descending=True).tolist()
        rows.append({"photo": name, "expected": truth, "top1": labels[order[0]], "top1_p": round(float(row[order[0]]), 3),
                     "top2": labels[order[1]], "top2_p": round(float(row[order[1]]), 3),
                     "imagenet_head": imagenet(photos[name])[0][1][0]})  # fmt: skip
    return rows


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = Path(args.output_dir)
    vocabulary = write_inputs(out)
    gallery = build_gallery.main(["--image_folder", str(out / "photos"), "--tagger", "imagenet", "--grid_size",
                                  str(args.grid_size), "--min_score", str(args.min_score), "--vocabulary", str(vocabulary),
                                  "--thumbnail_size", "28", "--output_dir", str(out / "gallery")])  # fmt: skip
    corpus = make_corpus.main(["--output_file", str(out / "corpus.txt"), "--vocabulary", str(vocabulary),
                               "--sentences", "8000", "--seed", str(args.seed)])  # fmt: skip
    pretrain.main(["--text_corpus", str(out / "corpus.txt"), "--gallery", str(out / "gallery"), "--vocabulary",
                   str(vocabulary), "--output_dir", str(out / "run"), "--max_steps", str(args.max_steps),
                   "--learning_rate", "2e-4", "--image_size", "224", "--seed", str(args.seed),
                   "--checkpointing_steps", str(args.max_steps), "--logging_steps", "25"])  # fmt: skip
    model, processor = evaluate_zero_shot.load_model(str(out / "run" / "final"), trust_remote_code=False)
    rows = classify_photos(model, processor, "a {}.")
    print("\n| photo | a person would say | VLMixer top-1 | top-2 | ImageNet head (tagger) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['photo']} | {r['expected']} | {r['top1']} ({r['top1_p']:.2f}) | {r['top2']} ({r['top2_p']:.2f}) "
              f"| {r['imagenet_head']} |")  # fmt: skip
    figures = {"gallery_rows": gallery["rows"], "gallery_counts": gallery["counts"], "corpus_sentences": corpus["sentences"],
               "steps": args.max_steps, "photos": rows,
               "correct": sum(r["top1"] == r["expected"] for r in rows)}  # fmt: skip
    return report(figures, args.output)


if __name__ == "__main__":
    main()
