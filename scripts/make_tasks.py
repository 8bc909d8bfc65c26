"""Make the five small downstream tasks from Fashion-MNIST scenes (offline, seeded, deterministic).

A scene is 2-4 Fashion-MNIST images pasted into a 2x2 grid of 28-pixel cells (a 56x56 PNG); each image is a region
whose box is its cell. Train scenes use Fashion-MNIST training images, validation scenes held-out training images,
test scenes test images (no image is in two splits). The tasks share the scenes of a split:

  retrieval       scene + caption naming its objects and counts ("a scene with two sneakers and a bag.")
  vqa             scene + question ("how many bags are there?", "is there a sneaker?", "what is at the top left?"),
                  answer, VQA soft targets (answers, scores) and the answer vocabulary vqa/answers.json
  reasoning       two scenes + statement ("the left scene has more shoes than the right scene."), true / false
  classification  scene + statement, entailment / neutral / contradiction
  captioning      scene + distinct reference captions

Output (written to a temporary folder, then renamed to --output_dir): a local `datasets` folder with one configuration
per task, images/<split>/<scene>.png, scenes/<split>.jsonl (full annotation with Fashion-MNIST indices),
<task>/<split>.jsonl for train / validation / test (image paths relative to that file), vqa/answers.json, tasks.json
(settings, columns, label names, counts) and README.md (the dataset card naming the configurations).

Load a task with datasets.load_dataset(output_dir, "vqa"), or fine-tune on it with
scripts/finetune_vqa.py --dataset_name <output_dir> --dataset_config_name vqa. The last line on stdout is one JSON
object with the figures (also written to --output).

Example:
  python scripts/make_tasks.py --output_dir outputs/tasks
"""

import argparse
import sys
import time
from pathlib import Path

from vlmixer.processing.sources import FASHION_MNIST_DIR

from vlmixer.scripts.checkpointing import staged_directory
from vlmixer.scripts.scene_tasks import SPLITS, TASKS, TaskConfig, write_tasks

from vlmixer.scripts.figures import report


def parse_args(argv=None) -> argparse.Namespace:
    defaults = TaskConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/tasks", help="the task folder to write (atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output_dir")
    parser.add_argument("--fashion_mnist", default=FASHION_MNIST_DIR, help="folder with the Fashion-MNIST idx files")
    for split in SPLITS:
        parser.add_argument(f"--{split}_scenes", type=int, default=defaults.scenes[split], help=f"{split} scenes")
        parser.add_argument(f"--{split}_pool_per_class", type=int, default=defaults.pool_per_class[split],
                            help=f"Fashion-MNIST images per class that {split} scenes draw from")  # fmt: skip
    parser.add_argument("--min_objects", type=int, default=defaults.min_objects, help="objects per scene, at least")
    parser.add_argument(
        "--max_objects", type=int, default=defaults.max_objects, help="objects per scene, at most (<= 4)"
    )
    parser.add_argument("--questions_per_scene", type=int, default=defaults.questions_per_scene)
    parser.add_argument("--references_per_scene", type=int, default=defaults.references_per_scene)
    parser.add_argument("--layout_caption_share", type=float, default=defaults.layout_caption_share,
                        help="share of captioning references that say where the objects are")  # fmt: skip
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    parser.add_argument("--output", default=None, help="also write the JSON figures to this file")
    return parser.parse_args(argv)


def task_config(args) -> TaskConfig:
    return TaskConfig(
        scenes={split: getattr(args, f"{split}_scenes") for split in SPLITS},
        pool_per_class={split: getattr(args, f"{split}_pool_per_class") for split in SPLITS},
        min_objects=args.min_objects,
        max_objects=args.max_objects,
        questions_per_scene=args.questions_per_scene,
        references_per_scene=args.references_per_scene,
        layout_caption_share=args.layout_caption_share,
        seed=args.seed,
    )


def main(argv=None) -> dict:
    args = parse_args(argv)
    if Path(args.output_dir).exists() and not args.overwrite:
        sys.exit(f"{args.output_dir} exists; pass --overwrite to replace it.")
    started = time.perf_counter()
    with staged_directory(args.output_dir, args.overwrite) as root:
        summary = write_tasks(root, task_config(args), args.fashion_mnist, progress=not args.no_progress)
    figures = {
        "output_dir": args.output_dir,
        "scenes": summary["scenes"],
        "rows": {task: summary["tasks"][task]["rows"] for task in TASKS},
        "source_images_used": summary["source_images_used"],
        "reasoning_labels_train": summary["tasks"]["reasoning"]["label_counts"]["train"],
        "classification_labels_train": summary["tasks"]["classification"]["label_counts"]["train"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    return report(figures, args.output)


if __name__ == "__main__":
    main()
