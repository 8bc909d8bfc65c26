"""Ablations of the main job: each row pre-trains with the same budget and seed, then runs the zero-shot evaluation.

Rows: without CMC (ratio 0: text only); CMC + masked LM only (with patch-word prediction); CMC + masked LM +
original-vs-mixed contrast (the paper's objectives); the default (+ patch alignment); + tag-aided visual pre-training;
CMC ratios 0.25 / 0.75 / 1.0 (0.5 is the default row); and an upper bound trained on real pairs (each gallery training
image with a caption from its label) instead of unpaired data. Prints one Markdown table; the last line on stdout is
one JSON object with every row (also written to --output).
"""

import argparse
import json
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent

from vlmixer.scripts import evaluate_zero_shot  # noqa: E402
from vlmixer.scripts.figures import report  # noqa: E402
from vlmixer.scripts import pretrain  # noqa: E402
from vlmixer.processing.sources import FASHION_MNIST_DIR  # noqa: E402


NO_CONTRAST = {"contrastive_loss_weight": 0.0, "patch_alignment_loss_weight": 0.0}
ROWS = {
    "without CMC (text only, ratio 0)": (["--cmc_ratio", "0"], {}),
    "CMC + masked LM only": ([], NO_CONTRAST),
    "CMC + masked LM + contrast": ([], {"patch_alignment_loss_weight": 0.0}),
    "CMC + masked LM + contrast + patch alignment (default)": ([], {}),
    "default + tag-aided visual pre-training": (["--stream_weights", "text=1,tags=0.25"], {}),
    "default, CMC ratio 0.25": (["--cmc_ratio", "0.25"], {}),
    "default, CMC ratio 0.75": (["--cmc_ratio", "0.75"], {}),
    "default, CMC ratio 1.0": (["--cmc_ratio", "1.0"], {}),
    "upper bound: real pairs instead of unpaired data": (
        ["--stream_weights", "pairs=1", "--caption_templates",
         "a {} on a plain background.|a product shot of a {}.|this {} is for sale.|a close-up of a {}."],
        {},
    ),
}  # fmt: skip


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text_corpus", default="outputs/demo/corpus.txt")
    parser.add_argument("--gallery", default="outputs/cache/gallery-fashion-mnist-train-600x10-112px")
    parser.add_argument("--output_dir", default="outputs/ablations")
    parser.add_argument("--cache_dir", default="outputs/cache")
    parser.add_argument("--image_size", type=int, default=112)
    parser.add_argument("--max_steps", type=int, default=600)
    parser.add_argument("--learning_rate", type=float, default=2e-4)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse_trained", action="store_true",
                        help="evaluate a row's existing final/ folder instead of training it again")  # fmt: skip
    parser.add_argument("--rows", default=None, help="comma-separated row numbers (1-based) to run; default: all")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    chosen = [list(ROWS)[int(i) - 1] for i in args.rows.split(",")] if args.rows else list(ROWS)
    results = {}
    for index, name in enumerate(chosen, 1):
        extra, overrides = ROWS[name]
        run_dir = Path(args.output_dir) / f"row{list(ROWS).index(name) + 1}"
        print(f"\n=== [{index}/{len(chosen)}] {name}", flush=True)
        if args.reuse_trained and (run_dir / "final" / "model.safetensors").exists():
            training = pretrain.loss_figures(run_dir / "metrics.csv")
        else:
            training = pretrain.main([
                "--text_corpus", args.text_corpus, "--gallery", args.gallery, "--output_dir", str(run_dir),
                "--max_steps", str(args.max_steps), "--batch_size", str(args.batch_size), "--seed", str(args.seed),
                "--learning_rate", str(args.learning_rate), "--image_size", str(args.image_size),
                "--checkpointing_steps", str(args.max_steps), "--logging_steps", "25",
                "--config_overrides", json.dumps(overrides), "--stream_weights", "text=1", *extra,
            ])  # fmt: skip
        evaluation = evaluate_zero_shot.main(["--model", str(run_dir / "final"), "--fashion_mnist", FASHION_MNIST_DIR,
                                              "--cache_dir", args.cache_dir,
                                              "--image_size", str(args.image_size), "--seed", str(args.seed),
                                              "--probe_gallery", args.gallery])  # fmt: skip
        results[name] = {"zero_shot_top1": evaluation["zero_shot_top1"], "prompt": evaluation["prompt"],
                         "zero_shot_top1_prompt_ensemble": evaluation["zero_shot_top1_prompt_ensemble"],
                         "linear_probe_top1": evaluation["linear_probe_top1"], **evaluation["retrieval"],
                         "last_loss": training.get("last_loss")}  # fmt: skip
    print("\n| row | zero-shot top-1 (chosen prompt) | all prompts averaged | scene→caption R@1/5/10 | caption→scene R@1/5/10 |")
    print("| --- | --- | --- | --- | --- |")
    for name, row in results.items():
        i2t = "/".join(f"{row[f'image_to_text_R@{k}']:.1%}" for k in (1, 5, 10))
        t2i = "/".join(f"{row[f'text_to_image_R@{k}']:.1%}" for k in (1, 5, 10))
        print(f"| {name} | {row['zero_shot_top1']:.1%} | {row['zero_shot_top1_prompt_ensemble']:.1%} | {i2t} | {t2i} |")
    figures = {"max_steps": args.max_steps, "batch_size": args.batch_size, "seed": args.seed, "rows": results}
    return report(figures, args.output)


if __name__ == "__main__":
    main()
