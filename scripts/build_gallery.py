"""Build a patch gallery from an image-only corpus: tagged regions -> frozen-backbone features -> PatchGallery.

Sources (pick one):
  --dataset_name NAME       any labelled image set `datasets.load_dataset` takes: a local folder in the `imagefolder`
                            layout (NAME/train/<class>/*.png, NAME/test/<class>/*.png), a Hub id, data files, or a
                            `save_to_disk` folder; --split (default: the only split, else "train"), and the image
                            and label columns found from the features (`Image`, `ClassLabel`) unless given.
  --fashion_mnist DIR       Fashion-MNIST idx files (Debian's dataset-fashion-mnist puts them in
                            /usr/share/datasets/fashion-mnist); each image is one region tagged with its class.
  --coco_annotations FILE   a COCO-format annotation file (boxes + category names) with --image_dir.
  --image_folder DIR        a folder of images: with class subfolders, their names are the labels (as
                            --dataset_name); without, a tagger gives the regions (--tagger imagenet or detector).

Regions and tags (--tagger):
  labels     the source's own boxes and labels (default);
  imagenet   offline: the built-in EfficientNet-Lite0's ImageNet head on the whole image and the cells of a
             --grid_size grid, regions kept above --min_score; with a --vocabulary, ImageNet classes are named by their
             nearest WordNet hypernym the vocabulary knows ("tabby" -> "cat"; needs Debian's wordnet-base);
  detector   a transformers object-detection model (--detector_model, e.g. facebook/detr-resnet-50; online users).

What the output folder holds, all needed later and read from there by scripts/pretrain.py and
scripts/evaluate_zero_shot.py:
  gallery.safetensors + gallery.json   the patches, with the backbone and how its crops were made (crop size,
                                       resizing, normalisation);
  concepts.json                        the concept vocabulary: --vocabulary, or made from the class names (plurals,
                                       numerals and number words; scripts/build_vocabulary.py documents the format);
  heldout.safetensors                  features of --validation_share of each class's images (at most
                                       --validation_max_per_class), kept out of the gallery: the zero-shot prompt
                                       is chosen on them, never on test images (labelled sources only).
Corrupt, empty or tiny images are skipped and counted. The last line on stdout is one JSON object with the summary
(also written to --output).

Examples:
  python scripts/build_gallery.py --dataset_name my-images --split train --output_dir my-gallery
  python scripts/build_gallery.py --fashion_mnist /usr/share/datasets/fashion-mnist --per_class 600 \\
      --image_size 112 --thumbnail_size 28 --output_dir outputs/gallery
"""

import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from vlmixer.processing import ConceptVocabulary, PatchGalleryBuilder
from vlmixer.processing.concepts import concept_label
from vlmixer.processing.features import RegionFeatureExtractor
from vlmixer.processing.processing_vlmixer import CONCEPTS_NAME, crop_region, to_rgb_image
from vlmixer.processing.sources import (
    DataError,
    LabelledImages,
    coco_images,
    fashion_mnist_images,
    folder_images,
    holdout_split,
    labelled_images,
    load_fashion_mnist,
    load_labelled_images,
)
from vlmixer.processing.tagging import ConceptNamer, DetectorTagger, ImageNetTagger, WordNetHypernyms

from vlmixer.scripts.evaluate_zero_shot import write_heldout
from vlmixer.scripts.figures import report


MIN_SIDE_PX = 8
MAX_SIDE_PX = 4096


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset_name", "--dataset", dest="dataset_name", metavar="NAME",
                        help="a labelled image set: imagefolder folder, Hub id, data files or save_to_disk folder")  # fmt: skip
    source.add_argument("--fashion_mnist", metavar="DIR", help="folder with the Fashion-MNIST idx files")
    source.add_argument("--coco_annotations", metavar="FILE", help="COCO-format annotation JSON")
    source.add_argument("--image_folder", metavar="DIR", help="a folder of images, in class subfolders or not")
    parser.add_argument("--dataset_config_name", default=None, help="the dataset's configuration (load_dataset)")
    parser.add_argument("--split", default=None, help="the split to read (default: the only one, else 'train')")
    parser.add_argument("--image_column", default=None, help="default: the dataset's Image feature")
    parser.add_argument("--label_column", default=None, help="default: the dataset's ClassLabel feature")
    parser.add_argument("--tagger", choices=("labels", "imagenet", "detector"), default="labels",
                        help="where regions and tags come from (see above)")  # fmt: skip
    parser.add_argument("--grid_size", type=int, default=0, help="imagenet tagger: also tag the cells of this grid")
    parser.add_argument("--detector_model", default=None, help="detector tagger: a model name or folder")
    parser.add_argument("--per_class", type=int, default=None, help="labelled sources: at most this many images of a class")
    parser.add_argument("--validation_share", type=float, default=0.1,
                        help="labelled sources: share of each class held out to choose the zero-shot prompt on")  # fmt: skip
    parser.add_argument("--validation_max_per_class", type=int, default=100)
    parser.add_argument("--image_dir", help="COCO: folder of the image files")
    parser.add_argument("--vocabulary", default=None,
                        help="'coco80', 'fashion_mnist' or a concepts JSON (scripts/build_vocabulary.py); labels "
                        "are mapped to its concepts. Default: made from the class names (or the tags)")  # fmt: skip
    parser.add_argument("--backbone", default="efficientnet-lite0", help="'efficientnet-lite0' or 'auto:<model>'")
    parser.add_argument("--image_size", type=int, default=224, help="crop size fed to the backbone (recorded)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--min_score", type=float, default=None,
                        help="drop regions tagged below this score (default: 0 for labels, 0.3 imagenet, 0.5 detector)")  # fmt: skip
    parser.add_argument("--thumbnail_size", type=int, default=None, help="store t x t thumbnails for the CMC picture")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", required=True, help="where the gallery, concepts.json and heldout go")
    parser.add_argument("--output", default=None, help="also write the JSON summary to this file")
    args = parser.parse_args(argv)
    if args.image_folder and args.tagger == "labels":
        if not Path(args.image_folder).is_dir():
            parser.error(f"--image_folder {args.image_folder} is not a folder.")
        if not any(path.is_dir() for path in Path(args.image_folder).iterdir()):
            sys.exit(f"build_gallery: {args.image_folder} has no class subfolders, so no labels: pass --tagger "
                     "imagenet (offline) or --tagger detector")  # fmt: skip
        args.dataset_name, args.image_folder = args.image_folder, None  # class folders are an imagefolder dataset
    if args.dataset_name and args.tagger != "labels":
        parser.error("--dataset_name has its own labels; the taggers are for --image_folder without class folders.")
    if args.per_class is not None and args.per_class < 1:
        parser.error(f"--per_class must be positive, got {args.per_class}.")
    return args


def load_vocabulary(name: str | None) -> ConceptVocabulary | None:
    if name is None:
        return None
    if name in ("coco80", "fashion_mnist"):
        return ConceptVocabulary.shipped(name)
    return ConceptVocabulary.from_json(name)


def labelled_source(args) -> LabelledImages | None:
    """The labelled image set, for the sources that have one (a dataset or Fashion-MNIST)."""
    if args.dataset_name:
        source = load_labelled_images(args.dataset_name, args.dataset_config_name, args.split, args.image_column,
                                      args.label_column, prefer="train")  # fmt: skip
        print(f"{args.dataset_name}: {len(source.labels):,} images of {len(source.class_names)} classes "
              f"(columns {source.image_column!r}, {source.label_column!r}; split {args.split or 'chosen: train'})")
        return source
    if args.fashion_mnist:
        images, labels = load_fashion_mnist(args.split or "train", args.fashion_mnist)
        return LabelledImages(images, "", "", ConceptVocabulary.fashion_mnist().labels, labels.astype(np.int64))
    return None


def class_concepts(class_names: list[str], vocabulary: ConceptVocabulary) -> list[str]:
    """The vocabulary's concept of each class, refusing classes it does not name (a t-shirt is no COCO 'person')."""
    concepts = [concept_label(name) if concept_label(name) in vocabulary else ConceptNamer(vocabulary)([name])
                for name in class_names]  # fmt: skip
    unnamed = [name for name, concept in zip(class_names, concepts) if concept is None]
    if unnamed:
        raise DataError(
            f"The vocabulary names none of the classes {unnamed}: leave --vocabulary out to make one from the class "
            "names, or add them to it (scripts/build_vocabulary.py)."
        )
    return concepts


def tagged_images(args, source: LabelledImages | None, indices, concepts: list[str] | None):
    if source is not None and args.fashion_mnist:
        return fashion_mnist_images(args.split or "train", concepts, indices, args.fashion_mnist)
    if source is not None:
        return labelled_images(source, indices, concepts)
    if args.image_folder:
        return folder_images(args.image_folder)
    if not args.image_dir:
        sys.exit("--coco_annotations needs --image_dir")
    return coco_images(args.coco_annotations, args.image_dir)


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


class RegionEncoder:
    """Collects (crop, record) pairs and encodes them with the backbone `batch_size` at a time."""

    def __init__(self, extractor: RegionFeatureExtractor, add):
        self.extractor, self.add, self.pending = extractor, add, defaultdict(list)

    def __call__(self, concept: str, crop, record: tuple) -> None:
        self.pending[concept].append((crop, record))
        if sum(map(len, self.pending.values())) >= self.extractor.batch_size:
            self.flush()

    def flush(self) -> None:
        features = iter(self.extractor.encode_crops([crop for items in self.pending.values() for crop, _ in items]))
        for concept, items in self.pending.items():
            self.add(concept, np.stack([next(features) for _ in items]), [record for _, record in items])
        self.pending.clear()


def encode_images(images, tagger, name_concept, min_score: float, encoder: RegionEncoder, thumbnail_size, skipped,
                  total: int | None = None, desc: str = "tagging and encoding images") -> int:  # fmt: skip
    """Tags, crops and encodes the regions of `images`; returns how many images were usable."""
    read = 0
    for tagged in tqdm(images, desc=desc, unit="img", total=total):
        image = safe_image(tagged, skipped)
        if image is None:
            continue
        read += 1
        for box, names, score in zip(*retagged(tagged, image, tagger)):
            concept = name_concept(names)
            if concept is None or score < min_score:
                skipped["untagged or low-score regions"] += 1
                continue
            crop = crop_region(image, box)
            thumbnail = np.asarray(crop.resize((thumbnail_size,) * 2)) if thumbnail_size else None
            encoder(concept, crop, (box, tagged.image_id, score, thumbnail))
    encoder.flush()
    return read


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        return build(args)
    except DataError as error:
        sys.exit(f"build_gallery: {error}")


def build(args) -> dict:
    started = time.perf_counter()
    vocabulary = load_vocabulary(args.vocabulary)
    source = labelled_source(args)
    concepts, gallery_rows, heldout_rows = None, None, np.zeros(0, dtype=np.int64)
    if source is not None:
        # Fashion-MNIST's shipped vocabulary adds synonyms ("jeans", "sweater") to its class names.
        default = ConceptVocabulary.fashion_mnist() if args.fashion_mnist else None
        vocabulary = vocabulary or default or ConceptVocabulary.from_class_names(source.class_names)
        concepts = class_concepts(source.class_names, vocabulary)
        gallery_rows, heldout_rows = holdout_split(source.labels, args.per_class, args.validation_share,
                                                   args.validation_max_per_class, args.seed)  # fmt: skip
    tagger = build_tagger(args)
    min_score = DEFAULT_MIN_SCORE[args.tagger] if args.min_score is None else args.min_score
    hypernyms = WordNetHypernyms() if args.tagger == "imagenet" and vocabulary is not None else None
    namer = ConceptNamer(vocabulary, hypernyms)
    # Without a vocabulary, tags are written as concept labels so that the one made from them below names them.
    name_concept = namer if vocabulary is not None else (lambda names: concept_label(names[0]))
    extractor = RegionFeatureExtractor(args.backbone, args.image_size, args.batch_size)
    builder = PatchGalleryBuilder(extractor.backbone_id, extractor.feature_dim, preprocessing=extractor.preprocessing)
    skipped, seen_concepts = Counter(), {}

    def add_to_gallery(concept, features, records):
        seen_concepts[concept] = True
        boxes, image_ids, scores, thumbnails = zip(*records)
        builder.add(concept, features, list(boxes), list(image_ids), list(scores),
                    np.stack(thumbnails) if args.thumbnail_size else None)  # fmt: skip

    images_read = encode_images(tagged_images(args, source, gallery_rows, concepts), tagger, name_concept, min_score,
                                RegionEncoder(extractor, add_to_gallery), args.thumbnail_size, skipped,
                                None if gallery_rows is None else len(gallery_rows))  # fmt: skip
    if images_read == 0:
        sys.exit(f"No usable image in the source (skipped: {dict(skipped)}); nothing was written.")
    output_dir = Path(args.output_dir)
    if vocabulary is None:
        vocabulary = ConceptVocabulary.from_class_names(list(seen_concepts))
    heldout = encode_heldout(source, heldout_rows, concepts, vocabulary, extractor, args, skipped)
    output_dir.mkdir(parents=True, exist_ok=True)
    vocabulary.to_json(output_dir / CONCEPTS_NAME)
    if heldout is not None:
        write_heldout(output_dir, *heldout, extractor.preprocessing)
    gallery = builder.save(output_dir)
    seconds = time.perf_counter() - started
    print(gallery.summary())
    unnamed = [concept for concept in gallery.concepts if concept not in vocabulary]
    if unnamed:
        print(f"warning: the vocabulary does not name the gallery concepts {unnamed}; their patches are never used.")
    summary = {
        "output_dir": args.output_dir,
        "backbone": gallery.backbone,
        "preprocessing": gallery.preprocessing,
        "feature_dim": gallery.feature_dim,
        "rows": len(gallery),
        "concepts": len(gallery.concepts),
        "counts": gallery.counts,
        "vocabulary": {"concepts": len(vocabulary), "surface_forms": sum(len(vocabulary.forms(c)) for c in vocabulary.labels)},
        "heldout_images": 0 if heldout is None else len(heldout[1]),
        "images": images_read,
        "skipped": dict(skipped),
        "seconds": round(seconds, 1),
        "images_per_s": round(images_read / seconds, 1),
    }
    return report(summary, args.output)


def encode_heldout(source, rows, concepts, vocabulary, extractor, args, skipped):
    """(features (N, D), concept ids (N,) into vocabulary.labels, image ids (N,)) of the held-out images, or None."""
    if source is None or len(rows) == 0:
        return None
    features, labels, image_ids = [], [], []

    def keep(concept, rows_features, records):
        features.append(rows_features)
        labels.extend([vocabulary.label_index[concept]] * len(records))
        image_ids.extend(record[1] for record in records)

    encode_images(tagged_images(args, source, rows, concepts), None, lambda names: names[0], 0.0,
                  RegionEncoder(extractor, keep), None, skipped, len(rows), "encoding held-out images")  # fmt: skip
    if not features:
        return None
    return np.concatenate(features), np.array(labels, dtype=np.int64), np.array(image_ids, dtype=np.int64)


if __name__ == "__main__":
    main()
