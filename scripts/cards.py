"""Model cards of VLMixer folders, written with huggingface_hub's ModelCard, ModelCardData and EvalResult.

One source of figures: a folder's `eval_results.json` (scripts/evaluate_zero_shot.py's record) gives the card's
`model-index` and the figures of its text; results/*/eval_results.json, the records of the runs the README reports,
give the README's results table (tests/test_cards.py checks that the README, the card and the records agree).
"""

import json
import string
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from vlmixer.scripts.atomic import atomic_write_text


# the demo card's text (its header comes from ModelCardData): the repository's model_card.md, through a link in
# scripts/ so that the wheel carries it as package data
CARD_TEMPLATE = Path(__file__).parent / "model_card.md"
EVAL_RESULTS_NAME = "eval_results.json"  # as evaluate_zero_shot.EVAL_RESULTS_NAME (not imported: that pulls in torch)
DATASET_ID = "zalando-datasets/fashion_mnist"
DATASET_NAME = "Fashion-MNIST"
SCENES_NAME = "Fashion-MNIST scenes (2-4 test images, captions from their labels)"
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
LICENSE = "apache-2.0"
# what the demo checkpoint was trained from and on (a pretrain.py run may start from and use anything)
DEMO_METADATA = {"base_model": BASE_MODEL, "datasets": [DATASET_ID], "metrics": ["accuracy", "recall"]}
TAGS = ["vlmixer", "vision-language", "unpaired", "cross-modal-cutmix", "zero-shot-image-classification",
        "fill-mask", "feature-extraction", "custom_code"]  # fmt: skip
# (record key in "retrieval", model-index metric name, card placeholder)
RETRIEVAL_METRICS = [
    *[(f"image_to_text_R@{k}", f"scene → caption R@{k}", f"i2t_r{k}") for k in (1, 5, 10)],
    *[(f"text_to_image_R@{k}", f"caption → scene R@{k}", f"t2i_r{k}") for k in (1, 5, 10)],
]
ZERO_SHOT_METRIC = "top-1 accuracy"
TRAINER_BOOKKEEPING = ("loss", "runtime", "samples_per_second", "steps_per_second", "epoch")  # not results


def percent(value: float) -> str:
    """A fraction as the README and the cards print it: 0.8246 -> '82.5%'."""
    return f"{value:.1%}"


def read_record(folder: Path) -> dict | None:
    """The folder's eval_results.json, or None when it has none."""
    path = Path(folder) / EVAL_RESULTS_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def is_zero_shot_record(record: dict | None) -> bool:
    """A record of evaluate_zero_shot.py (a Trainer's eval_results.json holds its own metrics, not these)."""
    return isinstance(record, dict) and "zero_shot_top1" in record


# ---------------------------------------------------------------------------------------------- model-index


def zero_shot_eval_results(record: dict) -> list[EvalResult]:
    """The `model-index` entries of a zero-shot record: classification top-1 and, when evaluated, scene retrieval."""
    results = [EvalResult(task_type="zero-shot-image-classification", task_name="Zero-shot image classification",
                          dataset_type=DATASET_ID, dataset_name=DATASET_NAME, dataset_split="test",
                          metric_type="accuracy", metric_name=ZERO_SHOT_METRIC, metric_value=record["zero_shot_top1"])]  # fmt: skip
    retrieval = record.get("retrieval") or {}
    results += [EvalResult(task_type="image-text-retrieval", task_name="Zero-shot image-text retrieval",
                           dataset_type=DATASET_ID, dataset_name=SCENES_NAME, dataset_split="test",
                           metric_type="recall", metric_name=name, metric_value=retrieval[key])
                for key, name, _ in RETRIEVAL_METRICS if key in retrieval]  # fmt: skip
    return results


def trainer_eval_results(metrics: dict, task_type: str, dataset_type: str, dataset_name: str,
                         split: str = "test", prefix: str | None = None,
                         dataset_config: str | None = None) -> list[EvalResult]:  # fmt: skip
    """The `model-index` entries of a Trainer's metrics ({"test_accuracy": 0.67, "test_runtime": 3.1, ...}): every
    number but the Trainer's bookkeeping, named without its prefix (default: the split's name and "_")."""
    prefix = f"{split}_" if prefix is None else prefix
    return [EvalResult(task_type=task_type, dataset_type=dataset_type, dataset_name=dataset_name, dataset_split=split,
                       dataset_config=dataset_config, metric_type=name.removeprefix(prefix),
                       metric_name=name.removeprefix(prefix), metric_value=value)
            for name, value in sorted(metrics.items())
            if isinstance(value, (int, float)) and not name.removeprefix(prefix).endswith(TRAINER_BOOKKEEPING)]  # fmt: skip


def add_model_index(folder: Path, eval_results: list[EvalResult]) -> Path:
    """Sets `eval_results` as the model-index of the folder's card, e.g. the one trainer.create_model_card() wrote:
    transformers writes a model-index only for the tasks and metric names it knows, which ours mostly are not."""
    folder = Path(folder)
    card = ModelCard.load(folder / "README.md")
    card.data.model_name = card.data.model_name or folder.resolve().name
    card.data.eval_results = eval_results
    return write_card(folder, card)


def metric_values(eval_results: list[EvalResult] | None) -> dict[tuple[str, str], float]:
    """{(task type, metric name): value} of model-index entries, to compare a card with a record."""
    return {(r.task_type, r.metric_name): r.metric_value for r in eval_results or []}


def card_data(model_name: str, pipeline_tag: str, eval_results: list[EvalResult] | None = None,
              **metadata) -> ModelCardData:
    """The card's metadata; model-index (named `model_name`) only when there are results."""
    return ModelCardData(model_name=model_name if eval_results else None, library_name="transformers", pipeline_tag=pipeline_tag, license=LICENSE,
                         tags=TAGS, eval_results=eval_results or None, **metadata)  # fmt: skip


def render(data: ModelCardData, body: str) -> ModelCard:
    # ModelCard.from_template renders with jinja2, which only the `app` extra installs: our body is a string.Template
    # filled before, the header is ModelCardData's YAML, and ModelCard parses the whole as Hub cards are parsed.
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body.lstrip()}")


def write_card(folder: Path, card: ModelCard) -> Path:
    """The card as the folder's README.md (whole or not at all)."""
    path = Path(folder) / "README.md"
    atomic_write_text(path, str(card))
    return path


# ---------------------------------------------------------------------------------------------- the demo's card


def template_placeholders() -> set[str]:
    """The $names of model_card.md."""
    pattern = string.Template.pattern
    return {m.group("named") or m.group("braced") for m in pattern.finditer(CARD_TEMPLATE.read_text())} - {None}


def record_fields(record: dict) -> dict[str, str]:
    """The figures of model_card.md's text, from a zero-shot record."""
    retrieval = record.get("retrieval") or {}
    fields = {placeholder: percent(retrieval[key]) for key, _, placeholder in RETRIEVAL_METRICS if key in retrieval}
    fields |= {f"chance_r{k}": percent(retrieval[f"chance_R@{k}"]) for k in (1, 5, 10) if f"chance_R@{k}" in retrieval}
    fields |= {"zero_shot_top1": percent(record["zero_shot_top1"]), "chance": percent(record["chance"]),
               "prompt": record["prompt"]}
    if "linear_probe_top1" in record:
        fields["linear_probe_top1"] = percent(record["linear_probe_top1"])
    return fields


def demo_card(record: dict, settings: dict, model_name: str) -> ModelCard:
    """The pre-trained demo checkpoint's card: model_card.md filled from its record and training `settings` (the
    placeholders that are not figures: per_class, image_size, max_steps, ...); a placeholder left unfilled is a KeyError."""
    body = string.Template(CARD_TEMPLATE.read_text()).substitute(record_fields(record) | settings)
    data = card_data(model_name, "zero-shot-image-classification", zero_shot_eval_results(record), **DEMO_METADATA)
    return render(data, body)


def write_demo_card(folder: Path, settings: dict) -> Path:
    """The demo card of a folder from its own eval_results.json."""
    folder = Path(folder)
    return write_card(folder, demo_card(read_record(folder), settings, folder.resolve().name))


# ---------------------------------------------------------------------------------------------- pretrain.py's card


def pretrained_card(model_name: str, settings: dict, figures: dict, record: dict | None = None) -> ModelCard:
    """A pre-training run's card: its settings and loss figures; model-index when a zero-shot record is given."""
    eval_results = zero_shot_eval_results(record) if is_zero_shot_record(record) else None
    body = "\n".join([
        f"# {model_name} (VLMixer, pre-trained)", "",
        "Pre-trained with `scripts/pretrain.py`: cross-modal CutMix on unpaired data (Wang et al., ICML 2022, "
        "[arXiv:2206.08919](https://arxiv.org/abs/2206.08919)). Load it with `trust_remote_code=True`.", "",
        "## Training settings", "", "```json", json.dumps(settings, indent=2, default=str), "```", "",
        "## Figures of the run (steps, time, first and last logged losses)", "", "```json", json.dumps(figures, indent=2, default=str), "```", "",
    ])  # fmt: skip
    return render(card_data(model_name, "feature-extraction", eval_results), body)


# ---------------------------------------------------------------------------------------------- checks


def card_problems(folder: Path) -> list[str]:
    """Why the folder's README.md is not a usable card (its metadata does not parse, or its model-index disagrees
    with the folder's zero-shot eval_results.json); empty when it is. Cards of any origin (the Trainer's too) pass."""
    path = Path(folder) / "README.md"
    try:
        card = ModelCard.load(path)
    except Exception as error:  # huggingface_hub raises ValueError, yaml errors or KeyError for a bad model-index
        return [f"README.md: its metadata does not parse as a model card ({type(error).__name__}: {error})"]
    record = read_record(folder)
    if not is_zero_shot_record(record):
        return []
    expected, found = metric_values(zero_shot_eval_results(record)), metric_values(card.data.eval_results)
    return [f"README.md: model-index {task} {name!r} is {found.get((task, name))}, eval_results.json says {value}"
            for (task, name), value in expected.items() if found.get((task, name)) != value]  # fmt: skip

