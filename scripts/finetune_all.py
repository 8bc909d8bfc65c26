"""Fine-tune all five downstream tasks twice with the same budget, from the pre-trained checkpoint and from scratch
(the same architecture on the all-MiniLM-L6-v2 text encoder with no vision-language pre-training), and compare.

Each run is its own process (scripts/finetune_<task>.py, its JSON report in <output_dir>/<task>-<init>.json); at the
end one Markdown table of the test metrics is printed, and the last stdout line is the JSON of every run (also written
to --output, by default outputs/finetune_results.json).

Example:
  python scripts/finetune_all.py --model_name_or_path vlmixer-small --dataset_name outputs/tasks --max_steps 60
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from vlmixer.scripts.figures import report


SCRIPTS_DIR = Path(__file__).resolve().parent
TASKS = ("retrieval", "vqa", "reasoning", "classification", "captioning")
INITS = ("pretrained", "scratch")
# (test metric, what the table calls it) per task; the first is the task's headline
TABLE_METRICS = {
    "retrieval": [("image_to_text_R@1", "image->text R@1"), ("text_to_image_R@1", "text->image R@1"),
                  ("mean_recall", "mean R@1/5/10")],
    "vqa": [("accuracy", "VQA accuracy")],
    "reasoning": [("accuracy", "accuracy")],
    "classification": [("accuracy", "accuracy"), ("macro_f1", "macro-F1")],
    "captioning": [("CIDEr", "CIDEr-D"), ("Bleu_4", "BLEU-4"), ("ROUGE_L", "ROUGE-L")],
}  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", "--model", default="vlmixer-small",
                        help="the pre-trained checkpoint (and processor)")  # fmt: skip
    parser.add_argument("--dataset_name", default="outputs/tasks",
                        help="the tasks folder scripts/make_tasks.py wrote (one dataset configuration per task)")  # fmt: skip
    parser.add_argument("--output_dir", default="outputs/finetune")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--inits", nargs="+", default=list(INITS), choices=INITS)
    parser.add_argument("--max_steps", type=int, default=60, help="the same budget for every run")
    parser.add_argument("--per_device_train_batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--max_eval_samples", type=int, default=200, help="validation / test rows evaluated")
    parser.add_argument("--caption_eval_samples", type=int, default=100,
                        help="validation / test images captioned (beam search on CPU is slow)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="outputs/finetune_results.json")
    parser.add_argument("--report_only", action="store_true",
                        help="run nothing: tabulate the reports already in --output_dir (<task>-<init>.json)")  # fmt: skip
    return parser.parse_args(argv)


def report_of(args, task: str, init: str) -> dict | None:
    """The JSON report a run left in --output_dir, if any."""
    path = Path(args.output_dir) / f"{task}-{init}.json"
    return json.loads(path.read_text()) if path.exists() else None


def run_one(args, task: str, init: str) -> dict:
    """One fine-tuning run in its own process; its JSON report."""
    output_dir = Path(args.output_dir) / f"{task}-{init}"
    report_file = Path(args.output_dir) / f"{task}-{init}.json"
    eval_samples = args.caption_eval_samples if task == "captioning" else args.max_eval_samples
    command = [
        sys.executable, str(SCRIPTS_DIR / f"finetune_{task}.py"), "--model_name_or_path", args.model_name_or_path,
        "--dataset_name", args.dataset_name, "--dataset_config_name", task,
        "--output_dir", str(output_dir), "--max_steps", str(args.max_steps),
        "--per_device_train_batch_size", str(args.per_device_train_batch_size),
        "--learning_rate", str(args.learning_rate), "--max_eval_samples", str(eval_samples),
        "--seed", str(args.seed), "--output", str(report_file),
    ] + (["--from_scratch"] if init == "scratch" else [])  # fmt: skip
    started = time.perf_counter()
    log = Path(args.output_dir) / f"{task}-{init}.log"
    with open(log, "w") as handle:
        completed = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
    if completed.returncode != 0:
        return {"task": task, "init": init, "error": f"exit {completed.returncode}, see {log}",
                "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    return json.loads(report_file.read_text())


def markdown_table(runs: list[dict]) -> str:
    """Task, metric, pre-trained, scratch, and the budget and seconds of each run."""
    found = {(run["task"], run["init"]): run for run in runs}
    lines = ["| task | test metric | pre-trained | scratch | steps x batch | seconds (pre-trained / scratch) |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for task in TASKS:
        pair = [found.get((task, init)) for init in INITS]
        if not any(pair):
            continue
        for key, name in TABLE_METRICS[task]:
            values = [f"{run['test'][key]:.3f}" if run and "test" in run else (run or {}).get("error", "-")
                      for run in pair]  # fmt: skip
            budget = next((f"{run['steps']} x {run['batch_size']}" for run in pair if run and "steps" in run), "-")
            seconds = " / ".join(str(run["seconds"]) if run else "-" for run in pair)
            lines.append(f"| {task} | {name} | {values[0]} | {values[1]} | {budget} | {seconds} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    runs = []
    for task in args.tasks:
        for init in args.inits:
            run = report_of(args, task, init) if args.report_only else run_one(args, task, init)
            if run is not None:
                runs.append(run)
                print(f"{task} {init}: {json.dumps(run.get('test', run.get('error')))}", flush=True)
    print(markdown_table(runs))
    names = ("model_name_or_path", "dataset_name", "max_steps", "per_device_train_batch_size", "learning_rate", "max_eval_samples",
             "caption_eval_samples", "seed")
    # with --report_only the runs' own reports say what each one did (steps, batch size, rows)
    settings = {"report_only": True} if args.report_only else {name: getattr(args, name) for name in names}
    return report({"settings": settings, "runs": runs}, args.output)


if __name__ == "__main__":
    main()
