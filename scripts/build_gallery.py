"""Build a patch gallery from an image-only corpus: tagged regions -> frozen-backbone features -> PatchGallery.

Sources (pick one):
  --fashion_mnist DIR       Fashion-MNIST idx files (Debian's dataset-fashion-mnist puts them in
                            /usr/share/datasets/fashion-mnist); each image is one region tagged with its class.
  --coco_annotations FILE   a COCO-format annotation file (boxes + category names) with --image_dir.
  --dataset PATH            a `datasets` folder (save_to_disk) with --image_column and --label_column.
  --image_folder DIR        a folder of images with no annotations (needs --tagger imagenet or detector).

Regions and tags (--tagger):
  labels     the source's own boxes and labels (default);
  imagenet   offline: the built-in EfficientNet-Lite0's ImageNet head on the whole image and the cells of a
             --grid_size grid, regions kept above --min_score; with a --vocabulary, ImageNet classes are named by their
             nearest WordNet hypernym the vocabulary knows ("tabby" -> "cat"; needs Debian's wordnet-base);
  detector   a transformers object-detection model (--detector_model, e.g. facebook/detr-resnet-50; online users).

The gallery (gallery.safetensors + gallery.json) is written atomically to --output_dir; corrupt, empty or tiny images
are skipped and counted. The last line on stdout is one JSON object with the summary (also written to --output).

Example:
  python scripts/build_gallery.py --fashion_mnist /usr/share/datasets/fashion-mnist --per_class 600 \\
      --image_size 112 --thumbnail_size 28 --output_dir outputs/gallery
"""

import argparse
import sys
import time
from collections import Counter, defaultdict

import numpy as np
from tqdm.auto import tqdm

from processing import ConceptVocabulary, PatchGalleryBuilder
from processing.features import RegionFeatureExtractor
from processing.processing_vlmixer import crop_region, to_rgb_image
from processing.sources import coco_images, dataset_images, fashion_mnist_images, folder_images
from processing.tagging import ConceptNamer, DetectorTagger, ImageNetTagger, WordNetHypernyms

from figures import report


MIN_SIDE_PX = 8
MAX_SIDE_PX = 4096


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--fashion_mnist", metavar="DIR", help="folder with the Fashion-MNIST idx files")
    source.add_argument("--coco_annotations", metavar="FILE", help="COCO-format annotation JSON")
    source.add_argument("--dataset", metavar="PATH", help="a datasets folder saved with save_to_disk")
    source.add_argument("--image_folder", metavar="DIR", help="a folder of unannotated images (jpg, png, ...)")
    parser.add_argument("--tagger", choices=("labels", "imagenet", "detector"), default="labels",
                        help="where regions and tags come from (see above)")  # fmt: skip
    parser.add_argument("--grid_size", type=int, default=0, help="imagenet tagger: also tag the cells of this grid")
    parser.add_argument("--detector_model", default=None, help="detector tagger: a model name or folder")
    parser.add_argument("--split", default="train", help="Fashion-MNIST or datasets split (default: train)")
    parser.add_argument("--per_class", type=int, default=None, help="Fashion-MNIST: class-balanced subset size")
    parser.add_argument("--image_dir", help="COCO: folder of the image files")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--label_column", default="label")
    parser.add_argument("--vocabulary", default=None,
                        help="'coco80', 'fashion_mnist' or a concepts JSON: tags are mapped to its labels, others dropped")  # fmt: skip
    parser.add_argument("--backbone", default="efficientnet-lite0", help="'efficientnet-lite0' or 'auto:<model>'")
    parser.add_argument("--image_size", type=int, default=224, help="crop size fed to the backbone")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--min_score", type=float, default=None,
                        help="drop regions tagged below this score (default: 0 for labels, 0.3 imagenet, 0.5 detector)")  # fmt: skip
    parser.add_argument("--thumbnail_size", type=int, default=None, help="store t x t thumbnails for the CMC picture")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", required=True, help="where gallery.safetensors and gallery.json go")
    parser.add_argument("--output", default=None, help="also write the JSON summary to this file")
    return parser.parse_args(argv)


def load_vocabulary(name: str | None) -> ConceptVocabulary | None:
    if name is None:
        return None
    if name in ("coco80", "fashion_mnist"):
        return ConceptVocabulary.shipped(name)
    return ConceptVocabulary.from_json(name)


def tagged_images(args, class_names: list[str]):
    if args.image_folder:
        return folder_images(args.image_folder)
    if args.fashion_mnist:
        return fashion_mnist_images(args.split, class_names, args.per_class, args.seed, args.fashion_mnist)
    if args.coco_annotations:
        if not args.image_dir:
            sys.exit("--coco_annotations needs --image_dir")
        return coco_images(args.coco_annotations, args.image_dir)
    return dataset_images(args.dataset, args.image_column, args.label_column, args.split)


DEFAULT_MIN_SCORE = {"labels": 0.0, "imagenet": 0.3, "detector": 0.5}


def build_tagger(args):
    """None for the source's own labels, else a callable image -> [(box, class names, score)]."""
    min_score = DEFAULT_MIN_SCORE[args.tagger] if args.min_score is None else args.min_score
    if args.tagger == "imagenet":
        return ImageNetTagger(min_score, args.grid_size)
    if args.tagger == "detector":
        if not args.detector_model:
            sys.exit("--tagger detector needs --detector_model (a transformers object-detection model)")
        return DetectorTagger(args.detector_model, min_score)
    if args.image_folder:
        sys.exit("--image_folder has no labels: pass --tagger imagenet (offline) or --tagger detector")
    return None


def retagged(tagged, image, tagger) -> tuple[list, list[list[str]], list[float]]:
    """The regions of an image: the source's (each label its own name list) or the tagger's."""
    if tagger is None:
        return tagged.boxes, [[tag] for tag in tagged.concepts], tagged.scores
    regions = tagger(image)
    return [r[0] for r in regions], [r[1] for r in regions], [r[2] for r in regions]


def safe_image(tagged, skipped: Counter):
    """The image as RGB, shrunk when huge; None (and counted) when it is corrupt or too small."""
    try:
        image = to_rgb_image(tagged.load())
    except (OSError, ValueError, TypeError, SyntaxError):
        skipped["corrupt"] += 1
        return None
    if min(image.size) < MIN_SIDE_PX:
        skipped["tiny"] += 1
        return None
    if max(image.size) > MAX_SIDE_PX:
        image.thumbnail((MAX_SIDE_PX, MAX_SIDE_PX))
        skipped["downscaled (kept)"] += 1
    return image


def main(argv=None) -> dict:
    args = parse_args(argv)
    vocabulary = load_vocabulary(args.vocabulary or ("fashion_mnist" if args.fashion_mnist else None))
    class_names = vocabulary.labels if vocabulary is not None else []
    tagger = build_tagger(args)
    min_score = DEFAULT_MIN_SCORE[args.tagger] if args.min_score is None else args.min_score
    hypernyms = WordNetHypernyms() if args.tagger == "imagenet" and vocabulary is not None else None
    name_concept = ConceptNamer(vocabulary, hypernyms)
    extractor = RegionFeatureExtractor(args.backbone, args.image_size, args.batch_size)
    builder = PatchGalleryBuilder(extractor.backbone_id, extractor.feature_dim)
    skipped, pending = Counter(), defaultdict(list)
    started, images_read = time.perf_counter(), 0

    def flush():
        crops = [item[0] for items in pending.values() for item in items]
        features = iter(extractor.encode_crops(crops))
        for concept, items in pending.items():
            rows = np.stack([next(features) for _ in items])
            thumbnails = np.stack([item[4] for item in items]) if args.thumbnail_size else None
            builder.add(concept, rows, [i[1] for i in items], [i[2] for i in items], [i[3] for i in items], thumbnails)
        pending.clear()

    for tagged in tqdm(tagged_images(args, class_names), desc="tagging and encoding images", unit="img"):
        image = safe_image(tagged, skipped)
        if image is None:
            continue
        images_read += 1
        for box, names, score in zip(*retagged(tagged, image, tagger)):
            concept = name_concept(names)
            if concept is None or score < min_score:
                skipped["untagged or low-score regions"] += 1
                continue
            crop = crop_region(image, box)
            thumbnail = np.asarray(crop.resize((args.thumbnail_size,) * 2)) if args.thumbnail_size else None
            pending[concept].append((crop, box, tagged.image_id, score, thumbnail))
        if sum(map(len, pending.values())) >= args.batch_size:
            flush()
    flush()
    if images_read == 0:
        sys.exit(f"No usable image in the source (skipped: {dict(skipped)}); nothing was written.")
    gallery = builder.save(args.output_dir)
    seconds = time.perf_counter() - started
    print(gallery.summary())
    summary = {
        "output_dir": args.output_dir,
        "backbone": gallery.backbone,
        "feature_dim": gallery.feature_dim,
        "rows": len(gallery),
        "concepts": len(gallery.concepts),
        "counts": gallery.counts,
        "images": images_read,
        "skipped": dict(skipped),
        "seconds": round(seconds, 1),
        "images_per_s": round(images_read / seconds, 1),
    }
    return report(summary, args.output)


if __name__ == "__main__":
    main()
