"""The main job: unpaired vision-language pre-training on real data, then zero-shot evaluation, end to end.

1. The image-only corpus: a patch gallery from Fashion-MNIST *training* images (class-balanced subset) with the
   built-in EfficientNet-Lite0 and its real ImageNet weights: images and their class labels, never a sentence.
2. The text-only corpus: sentences about clothes written with no image in sight, plus WordNet glosses.
3. Pre-training of vlmixer-small from the real all-MiniLM-L6-v2 weights with cross-modal CutMix (masked LM,
   patch-word prediction and original-vs-mixed contrast).
4. Zero-shot evaluation on all 10,000 Fashion-MNIST *test* images (never seen): classification and scene retrieval.
5. A Hub-ready folder (`vlmixer-small/`: model, processor, gallery, code files, eval_results.json and the model card
   with its model-index, from scripts/cards.py), reloaded in a fresh process where this package cannot be imported
   (`trust_remote_code=True`) to run the evaluation again.
6. Pictures: mixed sentences with their patches, the loss curves, the zero-shot confusion matrix.

Features and the gallery are cached under outputs/cache. The last line on stdout is one JSON object with the figures.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent

from vlmixer.scripts import build_gallery
from vlmixer.scripts import cards
from vlmixer.scripts import evaluate_zero_shot
from vlmixer.scripts import make_corpus
from vlmixer.scripts import pretrain
from vlmixer.scripts.figures import report

from vlmixer.processing.streams import parse_weights

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
PICTURES = ("cmc_examples.png", "loss_curves.png", "confusion_matrix.png")
PICTURE_SENTENCES = [
    "She wore a summer dress with leather sandals and a small bag.",
    "A white T-shirt, blue trousers and black ankle boots.",
    "He packed two sweaters, a coat and his running shoes.",
    "The meeting was moved to Thursday afternoon.",
]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/demo", help="run files, pictures and figures")
    parser.add_argument("--checkpoint_dir", default="vlmixer-small", help="the Hub-ready folder")
    parser.add_argument("--cache_dir", default="outputs/cache")
    parser.add_argument("--per_class", type=int, default=600, help="training images per class in the gallery")
    parser.add_argument("--image_size", type=int, default=112)
    parser.add_argument("--max_steps", type=int, default=600)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=2e-4)
    parser.add_argument("--cmc_ratio", type=float, default=0.5)
    parser.add_argument("--stream_weights", default="text=1,tags=0.25",
                        help="pre-training streams (scripts/pretrain.py): the text-only corpus with CMC, and tag-aided "
                        "visual pre-training on the gallery's images with their masked class tags (a fifth of the "
                        "steps; +4 points zero-shot in the 300-step ablation)")  # fmt: skip
    parser.add_argument("--sense_model", default="none",
                        help="pre-training's context model of the matcher (scripts/pretrain.py --sense_model): 'none' "
                             "(the rules alone, the default) or 'shipped'")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="also write the final JSON figures to this file")
    return parser.parse_args(argv)


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def ensure_fashion_mnist() -> None:
    if not Path(FASHION_MNIST, "t10k-images-idx3-ubyte.gz").exists():
        sys.exit(
            f"Fashion-MNIST is not in {FASHION_MNIST}. Install it with `sudo apt-get install dataset-fashion-mnist` "
            "(Debian/Ubuntu; `make install` does it as root), then run the demo again."
        )


def gallery_for(args) -> str:
    gallery = Path(args.cache_dir) / f"gallery-fashion-mnist-train-{args.per_class}x10-{args.image_size}px-seed{args.seed}"
    if not (gallery / "gallery.json").exists():
        build_gallery.main(["--fashion_mnist", FASHION_MNIST, "--per_class", str(args.per_class), "--image_size",
                            str(args.image_size), "--thumbnail_size", "28", "--seed", str(args.seed),
                            "--output_dir", str(gallery)])  # fmt: skip
    else:
        print(f"using the cached gallery {gallery}")
    return str(gallery)


def corpus_for(args) -> str:
    corpus = Path(args.output_dir) / "corpus.txt"
    make_corpus.main(["--output_file", str(corpus), "--seed", str(args.seed)])
    return str(corpus)


def pretrain_run(args, corpus: str, gallery: str) -> tuple[dict, Path]:
    run_dir = Path(args.output_dir) / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # the demo trains from the start each time
    figures = pretrain.main([
        "--text_corpus", corpus, "--gallery", gallery, "--output_dir", str(run_dir), "--max_steps", str(args.max_steps),
        "--batch_size", str(args.batch_size), "--learning_rate", str(args.learning_rate), "--cmc_ratio",
        str(args.cmc_ratio), "--stream_weights", args.stream_weights, "--image_size", str(args.image_size), "--seed", str(args.seed),
        "--checkpointing_steps", str(args.max_steps), "--logging_steps", "10", "--sense_model", args.sense_model,
    ])  # fmt: skip
    return figures, run_dir


def evaluate(folder: str, args, *extra: str) -> dict:
    return evaluate_zero_shot.main(["--model", folder, "--fashion_mnist", FASHION_MNIST, "--cache_dir", args.cache_dir, "--image_size",
                                    str(args.image_size), *extra])  # fmt: skip


def evaluate_as_remote_code(folder: str, args, prompt: str) -> dict:
    """The evaluation again, in a fresh process that cannot import this package: the folder must carry everything."""
    command = [sys.executable, str(SCRIPTS / "evaluate_zero_shot.py"), "--model", folder, "--trust_remote_code", "--fashion_mnist", FASHION_MNIST,
               "--cache_dir", args.cache_dir, "--image_size", str(args.image_size), "--scenes", "0", "--prompt", prompt]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""})
    if result.returncode != 0:
        sys.exit(f"Reloading {folder} as remote code failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def visual_stream_sentence(stream_weights: str) -> str:
    """The model card's words for the tag-aided visual pre-training stream, empty when it was off."""
    weights = parse_weights(stream_weights)
    share = weights.get("tags", 0) / sum(weights.values())
    if share == 0:
        return ""
    return (f"On about {share:.0%} of the steps (drawn at random), tag-aided visual pre-training instead: gallery "
            "images with their class tags, the tags masked and predicted (images and labels only, still no sentence).")


def cmc_picture(folder: str, path: Path) -> None:
    from transformers import AutoProcessor

    from vlmixer.processing.visualize import render_mixed_sentences

    processor = AutoProcessor.from_pretrained(folder)
    render_mixed_sentences(processor, PICTURE_SENTENCES, str(path), seed=0, cmc_ratio=1.0)


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    ensure_fashion_mnist()
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    step("1. image-only corpus -> patch gallery (Fashion-MNIST training images, EfficientNet-Lite0)")
    gallery = gallery_for(args)
    step("2. text-only corpus")
    corpus = corpus_for(args)
    step("3. pre-training vlmixer-small from all-MiniLM-L6-v2 with cross-modal CutMix")
    training, run_dir = pretrain_run(args, corpus, gallery)
    step("4. zero-shot evaluation on the 10,000 Fashion-MNIST test images")
    checkpoint = Path(args.checkpoint_dir)
    if checkpoint.exists():
        shutil.rmtree(checkpoint)
    shutil.copytree(run_dir / "final", checkpoint)
    results = evaluate(str(checkpoint), args, "--probe_gallery", gallery, "--no_prompt_ensemble", "--confusion_png",
                       str(output_dir / "confusion_matrix.png"))  # fmt: skip
    step("5. Hub-ready folder, reloaded as remote code in a fresh process")
    shutil.copy(run_dir / "loss_curves.png", output_dir / "loss_curves.png")
    cmc_picture(str(checkpoint), output_dir / "cmc_examples.png")
    for picture in PICTURES:  # the model card shows them
        shutil.copy(output_dir / picture, checkpoint / picture)
    retrieval = results["retrieval"]
    evaluate_zero_shot.write_eval_results(checkpoint, results)
    cards.write_demo_card(checkpoint, {  # the figures come from the eval_results.json just written
        "max_steps": args.max_steps, "batch_size": args.batch_size, "per_class": args.per_class,
        "cmc_ratio": args.cmc_ratio, "image_size": args.image_size, "visual_stream": visual_stream_sentence(args.stream_weights),
    })  # fmt: skip
    reloaded = evaluate_as_remote_code(str(checkpoint), args, results["prompt"])
    print(f"reloaded {checkpoint} as {reloaded['loaded_as']}: zero-shot top-1 {reloaded['zero_shot_top1']:.2%}")
    if reloaded["zero_shot_top1"] != results["zero_shot_top1"]:
        sys.exit(f"The reloaded folder gives {reloaded['zero_shot_top1']} instead of {results['zero_shot_top1']}.")

    figures = {
        "zero_shot_top1": results["zero_shot_top1"],
        "prompt": results["prompt"],
        "prompt_selection": results["prompt_selection"],
        "chance": 0.1,
        "linear_probe_top1": results["linear_probe_top1"],
        "reloaded_zero_shot_top1": reloaded["zero_shot_top1"],
        "reloaded_as": reloaded["loaded_as"],
        "retrieval": retrieval,
        "test_images": results["test_images"],
        "gallery_images": 10 * args.per_class,
        "pretraining": {k: v for k, v in training.items() if k.startswith(("first_", "last_", "steps", "seconds"))},
        "checkpoint": str(checkpoint),
        "pictures": [str(output_dir / name) for name in PICTURES],
        "seconds": round(time.perf_counter() - started, 1),
    }
    (output_dir / "figures.json").write_text(json.dumps(figures, indent=2))
    return report(figures, args.output)


if __name__ == "__main__":
    main()
