"""Fine-tune the five downstream tasks from the pre-trained checkpoint and from scratch (the same architecture on the
all-MiniLM-L6-v2 text encoder with no vision-language pre-training), over several seeds and training-set fractions,
next to each task's baselines; one record, one table, one learning-curve PNG per task.

Runs (each its own process: scripts/finetune_<task>.py; its JSON report and trainer_state.json kept under
--output_dir/<run>/, the weights deleted):
  - every task x start (pre-trained, scratch) x --seeds on the whole train split, evaluated on --max_eval_samples
    validation rows every --eval_steps steps (the learning curves) and on the test split at the end;
  - every task x start on --fractions of the train split (the first seed only): the data-efficiency view;
  - the frozen-feature probe where it applies (classification, VQA, reasoning): the pre-trained encoder frozen, only
    the task head trained (for classification one linear layer: a linear probe), first seed.
Baselines from the data alone: the train majority answer / class and the per-question-type majority (VQA), chance
(1 / test images) for retrieval, the most common train caption for every image (captioning).

The record (--record, JSON) holds the settings, every run with its curve, the baselines and the summary the table is
printed from: per task and start the mean and standard deviation over seeds and the 95% interval of one run's test
score (Wilson over the test examples for accuracies and R@1; for captioning metrics, which have no per-example form
here, a t interval over the seeds). The table is printed as Markdown; the last stdout line is one JSON object (the
summary). --report_only re-tabulates the runs already in --output_dir.

Example:
  python scripts/make_tasks.py --output_dir outputs/tasks16 --validation_scenes 200 --test_scenes 1000 \\
      --test_pool_per_class 150
  python scripts/finetune_all.py --model_name_or_path vlmixer-small --dataset_name outputs/tasks16
"""

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vlmixer.scripts.atomic import atomic_write_text
from vlmixer.scripts.figures import report


SCRIPTS_DIR = Path(__file__).resolve().parent
TASKS = ("retrieval", "vqa", "reasoning", "classification", "captioning")
INITS = ("pretrained", "scratch")
PROBE_TASKS = ("vqa", "reasoning", "classification")
# the headline test metric of each task (validation curves use the same key with eval_), what the table calls it,
# and whether it is a share of test examples (a Wilson interval applies)
HEADLINE = {
    "retrieval": ("image_to_text_R@1", "image->text R@1", True),
    "vqa": ("accuracy", "VQA accuracy", True),
    "reasoning": ("accuracy", "accuracy", True),
    "classification": ("accuracy", "accuracy", True),
    "captioning": ("CIDEr", "CIDEr-D (greedy)", False),
}
SECONDARY = {"retrieval": [("text_to_image_R@1", "text->image R@1")], "classification": [("macro_f1", "macro-F1")],
             "captioning": [("Bleu_4", "BLEU-4")]}  # fmt: skip
# steps per task (batch 16): what each head needs on 2 CPU cores, measured (see the README)
DEFAULT_STEPS = {"retrieval": 30, "vqa": 100, "reasoning": 100, "classification": 50, "captioning": 30}
Z95 = 1.959964


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", "--model", default="vlmixer-small",
                        help="the pre-trained checkpoint (and processor)")  # fmt: skip
    parser.add_argument("--dataset_name", default="outputs/tasks",
                        help="the tasks folder scripts/make_tasks.py wrote (one dataset configuration per task)")  # fmt: skip
    parser.add_argument("--bert_model", default=None, help="the text encoder of the scratch start (default: MiniLM)")
    parser.add_argument("--output_dir", default="outputs/finetune")
    parser.add_argument("--record", default="results/finetune/results.json", help="the JSON record written")
    parser.add_argument("--figures_dir", default="docs", help="where finetune_<task>.png go")
    parser.add_argument("--cache_dir", default=None, help="datasets / region feature cache of the runs")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--inits", nargs="+", default=list(INITS), choices=INITS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--fractions", nargs="*", type=float, default=[0.1, 0.3],
                        help="shares of the train split for the data-efficiency runs (first seed; 1.0 is the sweep)")  # fmt: skip
    parser.add_argument("--no_probe", action="store_true", help="skip the frozen-feature probes")
    parser.add_argument("--max_steps", type=int, default=None,
                        help=f"the same steps for every task (default per task: {DEFAULT_STEPS})")  # fmt: skip
    parser.add_argument("--per_device_train_batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--head_learning_rate_multiplier", type=float, default=10.0)
    parser.add_argument("--eval_steps", type=int, default=None, help="validation every N steps (default: steps / 6)")
    parser.add_argument("--max_eval_samples", type=int, default=100, help="validation rows of the curves")
    parser.add_argument("--max_test_samples", type=int, default=None, help="test rows (default: all)")
    parser.add_argument("--vqa_test_samples", type=int, default=1000,
                        help="test questions of VQA (3 per scene: the first scenes' questions)")  # fmt: skip
    parser.add_argument("--caption_eval_samples", type=int, default=30, help="validation images captioned")
    parser.add_argument("--caption_test_samples", type=int, default=200, help="test images captioned (greedy)")
    parser.add_argument("--max_length", type=int, default=32, help="tokens per sequence, regions included")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (each on one thread)")
    parser.add_argument("--report_only", action="store_true", help="run nothing: tabulate the runs in --output_dir")
    return parser.parse_args(argv)


# ============================================================================================== runs


def plan(args) -> list[dict]:
    """Every run: name, task, init, seed, fraction, probe."""
    runs = []
    for task in args.tasks:
        for init in args.inits:
            runs += [dict(task=task, init=init, seed=seed, fraction=1.0, probe=False) for seed in args.seeds]
            runs += [dict(task=task, init=init, seed=args.seeds[0], fraction=fraction, probe=False)
                     for fraction in args.fractions if fraction < 1.0]  # fmt: skip
        if task in PROBE_TASKS and not args.no_probe and "pretrained" in args.inits:
            runs.append(dict(task=task, init="pretrained", seed=args.seeds[0], fraction=1.0, probe=True))
    for run in runs:
        run["name"] = (f"{run['task']}-{'probe' if run['probe'] else run['init']}-seed{run['seed']}"
                       f"-{round(run['fraction'] * 100)}pct")  # fmt: skip
    return runs


def rows_of(dataset: str, task: str, split: str = "train") -> int:
    with open(Path(dataset) / task / f"{split}.jsonl") as handle:
        return sum(1 for line in handle if line.strip())


def steps_of(args, task: str) -> int:
    return args.max_steps or DEFAULT_STEPS[task]


def command_of(args, run: dict) -> list[str]:
    task, folder = run["task"], Path(args.output_dir) / run["name"]
    steps = steps_of(args, task)
    eval_steps = args.eval_steps or max(1, steps // 5)
    curve = run["fraction"] == 1.0 and not run["probe"]  # the learning curves: validation every eval_steps
    captioning = task == "captioning"
    command = [
        sys.executable, str(SCRIPTS_DIR / f"finetune_{task}.py"), "--model_name_or_path", args.model_name_or_path,
        "--dataset_name", args.dataset_name, "--dataset_config_name", task, "--output_dir", str(folder),
        "--output", str(folder / "report.json"), "--max_steps", str(steps), "--seed", str(run["seed"]),
        "--per_device_train_batch_size", str(args.per_device_train_batch_size), "--learning_rate", str(args.learning_rate),
        "--head_learning_rate_multiplier", str(args.head_learning_rate_multiplier), "--warmup_steps", "0.1",
        "--eval_strategy", "steps" if curve else "no", "--eval_steps", str(eval_steps), "--save_strategy", "no",
        "--do_eval", str(curve),
        "--load_best_model_at_end", "False", "--logging_steps", str(eval_steps), "--max_length", str(args.max_length),
        "--max_eval_samples", str(args.caption_eval_samples if captioning else args.max_eval_samples),
        "--disable_tqdm", "True", "--dataloader_num_workers", "0",
    ]  # fmt: skip
    # every test row unless capped (without --max_test_samples the test split would be cut to --max_eval_samples)
    command += ["--max_test_samples", str(test_limit(args, task) or rows_of(args.dataset_name, task, "test"))]
    if captioning:
        command += ["--generation_num_beams", "1"]
    if task == "retrieval":
        command += ["--rerank_k", "0"]
    if run["fraction"] < 1.0:
        command += ["--max_train_samples", str(max(1, round(run["fraction"] * rows_of(args.dataset_name, task))))]
    if run["init"] == "scratch":
        command += ["--from_scratch"] + (["--bert_model", args.bert_model] if args.bert_model else [])
    if run["probe"]:
        command += ["--freeze_encoder"]
    if args.cache_dir:
        command += ["--cache_dir", args.cache_dir]
    return command


def test_limit(args, task: str) -> int | None:
    """Test rows a task's runs evaluate (None: all)."""
    return {"captioning": args.caption_test_samples, "vqa": args.vqa_test_samples}.get(task, args.max_test_samples)


def execute(args, run: dict) -> dict:
    """One run in its own process on one thread; its report with the validation curve (the weights are deleted)."""
    folder = Path(args.output_dir) / run["name"]
    command = command_of(args, run)
    done = folder / "result.json"
    if done.exists() and json.loads(done.read_text()).get("command") == command[1:]:  # the same run, finished
        result = collect(args, run)
        print(f"{run['name']}: kept from an earlier sweep", flush=True)
        return result
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    started = time.perf_counter()
    with open(folder / "run.log", "w") as log:
        completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    for pattern in ("*.safetensors", "*.bin", "checkpoint-*"):
        for path in folder.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    result = collect(args, run)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    if completed.returncode != 0:
        result["error"] = f"exit {completed.returncode}, see {folder / 'run.log'}"
    else:
        atomic_write_text(done, json.dumps({"command": command[1:], "wall_seconds": result["wall_seconds"]}) + "\n")
    print(f"{run['name']}: {json.dumps(result.get('test', {}).get(HEADLINE[run['task']][0], result.get('error')))} "
          f"({result['wall_seconds']} s)", flush=True)  # fmt: skip
    return result


def collect(args, run: dict) -> dict:
    """A run's report and validation curve as the record keeps them."""
    folder = Path(args.output_dir) / run["name"]
    result = dict(run)
    report_file, state_file = folder / "report.json", folder / "trainer_state.json"
    if report_file.exists():
        figures = json.loads(report_file.read_text())
        result.update({key: figures[key] for key in ("steps", "batch_size", "learning_rate", "train_rows", "test_rows",
                                                     "train_loss", "train_seconds", "seconds", "test") if key in figures})  # fmt: skip
    if state_file.exists():
        key = "eval_" + HEADLINE[run["task"]][0]
        history = json.loads(state_file.read_text())["log_history"]
        result["curve"] = [[entry["step"], entry[key]] for entry in history if key in entry]
    if (folder / "result.json").exists():
        result["wall_seconds"] = json.loads((folder / "result.json").read_text())["wall_seconds"]
    if "test" not in result:
        result.setdefault("error", "no report")
    return result


# ============================================================================================== baselines


def read_rows(dataset: str, task: str, split: str) -> list[dict]:
    with open(Path(dataset) / task / f"{split}.jsonl") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def baselines(args) -> dict:
    """What the data alone scores on the test rows the runs use: majority / chance (and VQA's per-type prior)."""
    out = {}
    for task in args.tasks:
        limit = test_limit(args, task)
        train, test = read_rows(args.dataset_name, task, "train"), read_rows(args.dataset_name, task, "test")[:limit]
        if task == "retrieval":
            out[task] = {"chance": 1.0 / len(test)}
        elif task == "vqa":
            majority = Counter(row["answer"] for row in train).most_common(1)[0][0]
            by_type = {}
            for row in train:
                by_type.setdefault(row["question_type"], Counter())[row["answer"]] += 1

            def score(row, answer):
                return min(1.0, sum(s for a, s in zip(row["answers"], row["scores"]) if a == answer))

            out[task] = {
                "majority": sum(score(row, majority) for row in test) / len(test), "majority_answer": majority,
                "type_prior": sum(score(row, by_type[row["question_type"]].most_common(1)[0][0]) for row in test)
                / len(test),
            }  # fmt: skip
        elif task in ("reasoning", "classification"):
            counts = Counter(row["label"] for row in train)
            majority = counts.most_common(1)[0][0]
            out[task] = {"majority": sum(row["label"] == majority for row in test) / len(test),
                         "majority_label": majority, "chance": 1.0 / len(counts)}  # fmt: skip
        elif task == "captioning":
            out[task] = {"majority": majority_caption_score(train, test)}
    return out


def majority_caption_score(train: list[dict], test: list[dict]) -> float | None:
    """CIDEr-D of the most common train reference given for every test image."""
    try:
        import evaluate

        from vlmixer.processing.metrics import metric_path
    except ImportError:
        return None
    key = "references" if "references" in train[0] else "captions"
    caption = Counter(ref for row in train for ref in row[key]).most_common(1)[0][0]
    metric = evaluate.load(metric_path("caption_metrics"))
    scores = metric.compute(predictions=[caption] * len(test), references=[row[key] for row in test], meteor=False)
    return scores["CIDEr"]


# ============================================================================================== summary


def wilson(p: float, n: int) -> float:
    """Half-width of the 95% Wilson interval of a share p over n examples (around its centre)."""
    if not n:
        return float("nan")
    denominator = 1 + Z95**2 / n
    return Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denominator


def t_half_width(values: list[float]) -> float:
    """Half-width of the 95% t interval of the mean of values (seeds)."""
    t975 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571}
    if len(values) < 2:
        return float("nan")
    return t975.get(len(values), 2.262) * statistics.stdev(values) / math.sqrt(len(values))


def summarize(args, runs: list[dict], base: dict) -> dict:
    """Per task: per start the mean / std over seeds of the headline and secondary metrics, the 95% interval, the
    fractions, the probe, the baselines, and the two verdicts (beats its baseline; pre-training beats scratch)."""
    summary = {}
    for task in args.tasks:
        key, _, is_share = HEADLINE[task]
        entry = {"baselines": base.get(task, {})}
        for init in args.inits:
            full = [r for r in runs if r["task"] == task and r["init"] == init and not r["probe"] and r["fraction"] == 1.0
                    and "test" in r and key in r["test"]]  # fmt: skip
            if not full:
                continue
            values = [r["test"][key] for r in full]
            mean = statistics.fmean(values)
            stats = {"seeds": [r["seed"] for r in full], "values": values, "mean": mean,
                     "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                     "test_rows": full[0].get("test_rows"), "steps": full[0].get("steps"),
                     "seconds": round(statistics.fmean(r.get("wall_seconds", 0) for r in full), 1)}  # fmt: skip
            stats["ci95"] = wilson(mean, stats["test_rows"]) if is_share else t_half_width(values)
            stats["ci95_kind"] = "wilson" if is_share else "t over seeds"
            for second, _ in SECONDARY.get(task, []):
                seconds = [r["test"][second] for r in full if second in r["test"]]
                if seconds:
                    stats[second] = {"mean": statistics.fmean(seconds),
                                     "std": statistics.stdev(seconds) if len(seconds) > 1 else 0.0}  # fmt: skip
            fractions = {}
            for r in runs:
                if r["task"] == task and r["init"] == init and not r["probe"] and "test" in r and key in r["test"]:
                    if r["fraction"] < 1.0 or r["seed"] == args.seeds[0]:
                        fractions[str(r["fraction"])] = r["test"][key]
            stats["fractions"] = fractions
            entry[init] = stats
        probe = [r for r in runs if r["task"] == task and r["probe"] and "test" in r and key in r["test"]]
        if probe:
            entry["probe"] = probe[0]["test"][key]
        if "pretrained" in entry:
            pre = entry["pretrained"]
            # the bar: the majority answer / class or chance, by more than the 95% interval; VQA's per-type
            # prior (the majority answer of each question type) is the harder bar, judged apart
            bars = entry["baselines"]
            reference = max((bars[k] for k in ("majority", "chance") if bars.get(k) is not None), default=None)
            if reference is not None:
                entry["beats_baseline"] = bool(pre["mean"] - reference > pre["ci95"])
            if bars.get("type_prior") is not None:
                entry["beats_type_prior"] = bool(pre["mean"] - bars["type_prior"] > pre["ci95"])
            if "scratch" in entry:
                scratch = entry["scratch"]
                gap = pre["mean"] - scratch["mean"]
                spread = pre["std"] + scratch["std"]
                entry["pretraining_gap"] = gap
                entry["pretraining_beats_scratch"] = bool(gap > max(spread, pre["ci95"]))
        summary[task] = entry
    return summary


def pct(value: float | None, share: bool = True) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.1f}" if share else f"{value:.3f}"


def markdown_table(args, summary: dict) -> str:
    """One row per task: pre-trained and scratch (mean ± std over seeds, 95% interval), baselines, probe, verdicts;
    then the data-efficiency rows."""
    lines = ["| task (test rows) | metric | pre-trained | scratch | majority / chance | frozen probe | steps x batch "
             "| pre-trained > majority / chance (by > 95% interval) | pre-trained > scratch (by > seed spread) |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for task, entry in summary.items():
        key, name, share = HEADLINE[task]
        unit = " (%)" if share else ""

        def cell(init):
            stats = entry.get(init)
            if not stats:
                return "-"
            return f"{pct(stats['mean'], share)} ± {pct(stats['std'], share)} [±{pct(stats['ci95'], share)}]"

        base = entry["baselines"]
        base_text = " / ".join(f"{label} {pct(base[k], share)}" for k, label in
                               (("majority", "majority"), ("type_prior", "per-type prior"), ("chance", "chance"))
                               if base.get(k) is not None) or "-"  # fmt: skip
        rows = next((entry[init]["test_rows"] for init in INITS if init in entry), "-")
        type_prior_text = ("" if "beats_type_prior" not in entry else
                           f"; per-type prior: {yes_no(entry['beats_type_prior'])}")  # fmt: skip
        gap = entry.get("pretraining_gap")
        gap_text = "" if gap is None else f" ({'+' if gap >= 0 else ''}{pct(gap, share)})"
        lines.append(
            f"| {task} ({rows}) | {name}{unit} | {cell('pretrained')} | {cell('scratch')} | "
            f"{base_text} | {pct(entry.get('probe'), share) if 'probe' in entry else '-'} | "
            f"{next((entry[i]['steps'] for i in INITS if i in entry), '-')} x {args.per_device_train_batch_size} | "
            f"{yes_no(entry.get('beats_baseline'))}{type_prior_text} | {yes_no(entry.get('pretraining_beats_scratch'))}{gap_text} |"
        )  # fmt: skip
    lines += ["", "| task | metric | start | " + " | ".join(f"{f:.0%} of train (seed {args.seeds[0]})"
                                                         for f in fraction_list(args)) + " |",
              "|---|---|---|" + "---|" * len(fraction_list(args))]  # fmt: skip
    for task, entry in summary.items():
        key, name, share = HEADLINE[task]
        for init in INITS:
            if init in entry:
                values = [pct(entry[init]["fractions"].get(str(f)), share) for f in fraction_list(args)]
                lines.append(f"| {task} | {name} | {init} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def fraction_list(args) -> list[float]:
    return sorted({*[f for f in args.fractions if f < 1.0], 1.0})


def yes_no(value) -> str:
    return "-" if value is None else ("yes" if value else "no")


# ============================================================================================== curves


def plot_curves(args, runs: list[dict], summary: dict) -> list[str]:
    """finetune_<task>.png: validation metric vs steps, both starts, mean over seeds with the min-max band shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    written = []
    Path(args.figures_dir).mkdir(parents=True, exist_ok=True)
    for task in summary:
        key, name, share = HEADLINE[task]
        figure, axis = plt.subplots(figsize=(5, 3.4))
        for init, colour in zip(INITS, ("tab:blue", "tab:orange")):
            curves = [r["curve"] for r in runs if r["task"] == task and r["init"] == init and not r["probe"]
                      and r["fraction"] == 1.0 and r.get("curve")]  # fmt: skip
            if not curves:
                continue
            length = min(len(c) for c in curves)
            steps = np.array([c[i][0] for c in curves[:1] for i in range(length)])
            values = np.array([[c[i][1] for i in range(length)] for c in curves]) * (100 if share else 1)
            axis.plot(steps, values.mean(0), color=colour, label=f"{init} ({len(curves)} seeds)")
            axis.fill_between(steps, values.min(0), values.max(0), color=colour, alpha=0.25)
        base = summary[task]["baselines"]
        for k, style in (("majority", ":"), ("type_prior", "-."), ("chance", "--")):
            if base.get(k) is not None:
                axis.axhline(base[k] * (100 if share else 1), color="grey", linestyle=style, linewidth=1,
                             label=f"{k.replace('_', ' ')} (test)")  # fmt: skip
        axis.set_xlabel("training step")
        axis.set_ylabel(f"validation {name}{' (%)' if share else ''}")
        axis.set_title(f"{task}: mean over seeds, min-max shaded")
        axis.legend(fontsize=7)
        figure.tight_layout()
        path = Path(args.figures_dir) / f"finetune_{task}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(str(path))
    return written


# ============================================================================================== main


def main(argv=None) -> dict:
    args = parse_args(argv)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    Path(args.record).parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    planned = plan(args)
    if args.report_only:
        runs = [collect(args, run) for run in planned if (Path(args.output_dir) / run["name"]).exists()]
    else:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            # the whole-split runs first, then the probes and fractions; neighbours are different tasks (two runs
            # of one task at once would both extract its region features before either has cached them)
            order = sorted(planned, key=lambda run: (run["fraction"] < 1.0, run["probe"], -run["fraction"], run["seed"],
                                                     run["init"], args.tasks.index(run["task"])))
            runs = list(pool.map(lambda run: execute(args, run), order))
    base = baselines(args)
    summary = summarize(args, runs, base)
    figures = plot_curves(args, runs, summary)
    table = markdown_table(args, summary)
    print(table)
    settings = {name: getattr(args, name) for name in vars(args) if name not in ("report_only",)}
    settings["steps"] = {task: steps_of(args, task) for task in args.tasks}
    record = {"settings": settings, "seconds": round(time.perf_counter() - started, 1), "summary": summary,
              "runs": runs, "figures": figures, "table": table}  # fmt: skip
    if not args.report_only or not Path(args.record).exists():
        atomic_write_text(args.record, json.dumps(record, indent=1) + "\n")
    else:  # keep the measured run time of the sweep
        previous = json.loads(Path(args.record).read_text())
        record["seconds"] = previous.get("seconds", record["seconds"])
        atomic_write_text(args.record, json.dumps(record, indent=1) + "\n")
    return report({"record": args.record, "seconds": record["seconds"], "figures": figures, "summary": summary})


if __name__ == "__main__":
    main()
