"""
The downstream metrics as local `evaluate` modules that ship with the package and load offline:

    import evaluate
    from vlmixer.processing.metrics import metric_path

    recall = evaluate.load(metric_path("recall_at_k"))      # retrieval: Recall@1/5/10, both directions
    vqa = evaluate.load(metric_path("vqa_accuracy"))        # VQA soft accuracy (human answers or soft targets)
    captions = evaluate.load(metric_path("caption_metrics"))  # BLEU-1..4, ROUGE-L, CIDEr-D (+ METEOR with Java)

Each folder holds `<name>/<name>.py`, an `evaluate.Metric`. Their plain functions are importable too
(`processing.metrics.recall_at_k.recall_at_k.recall_at_k`, ...).
"""

from pathlib import Path


METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("recall_at_k", "vqa_accuracy", "caption_metrics")


def metric_path(name: str) -> str:
    """The folder of a shipped metric module, for `evaluate.load(metric_path(name))`."""
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; the shipped metrics are {list(METRIC_NAMES)}.")
    return str(METRICS_DIR / name)


def load_metric(name: str, **kwargs):
    """`evaluate.load` of a shipped metric (offline: a local folder, no Hub call)."""
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)


__all__ = ["METRICS_DIR", "METRIC_NAMES", "load_metric", "metric_path"]
