"""Recall@K for image-text retrieval, as an `evaluate` metric (loads offline with `evaluate.load(<this folder>)`)."""

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """
Recall@K for cross-modal retrieval: the share of queries with at least one correct item among their K best-ranked
items. From a similarity matrix (one row of scores per query, e.g. per image over all texts) it gives both
directions, query-to-item and item-to-query (the matrix transposed); from ranked lists, the one direction given.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): per query, the similarity to every item (a row of the (queries, items)
        matrix); with `ranked=True`, the item ids ranked best first (any length).
    references (`list` of `list` of `int`): per query, the ids of its correct items (at least one).
    k (`list` of `int`, default `[1, 5, 10]`): the cut-offs.
    ranked (`bool`, default `False`): predictions are ranked item ids, not scores.
    both_directions (`bool`, default `True`): with scores, also rank queries for each item (the transposed matrix);
        items that are correct for no query are left out of that direction.
    query_name, item_name (`str`, default `"image"`, `"text"`): how the keys name the two sides.
Returns:
    `{query}_to_{item}_R@{k}` for every k, and with both directions `{item}_to_{query}_R@{k}`: floats in [0, 1];
    `mean_recall`: their mean; `queries`, `items`: the counts.
Examples:
    >>> recall = evaluate.load("processing/metrics/recall_at_k")
    >>> recall.compute(predictions=[[0.9, 0.1], [0.2, 0.8]], references=[[0], [1]], k=[1])
    {'image_to_text_R@1': 1.0, 'text_to_image_R@1': 1.0, 'mean_recall': 1.0, 'queries': 2, 'items': 2}
"""

_CITATION = """
@inproceedings{karpathy2015deep,
  title={Deep Visual-Semantic Alignments for Generating Image Descriptions},
  author={Karpathy, Andrej and Fei-Fei, Li},
  booktitle={CVPR},
  year={2015}
}
"""


def recall_at_k(similarity, correct, ks=(1, 5, 10)) -> dict[int, float]:
    """Recall@K for a (queries, items) similarity matrix, where `correct[q, i]` says item i answers query q (array
    likes or torch tensors). Queries with no correct item count as misses; tied scores keep item order."""
    scores, hits = np.asarray(similarity, dtype=np.float64), np.asarray(correct, dtype=bool)
    if scores.ndim != 2 or scores.shape != hits.shape:
        raise ValueError(
            f"similarity {scores.shape} and correct {hits.shape} must be (queries, items) matrices of one shape."
        )
    if not np.isfinite(scores).all():
        raise ValueError("similarity contains NaN or infinite values.")
    ranked_hits = np.take_along_axis(hits, np.argsort(-scores, axis=1, kind="stable"), axis=1)
    return {k: float(ranked_hits[:, :k].any(axis=1).mean()) if len(scores) else 0.0 for k in ks}


def recall_of_rankings(rankings, references, ks=(1, 5, 10)) -> dict[int, float]:
    """Recall@K for ranked item-id lists, one per query, against each query's correct ids."""
    hits = [[item in set(correct) for item in ranking] for ranking, correct in zip(rankings, references)]
    return {k: float(np.mean([any(h[:k]) for h in hits])) if hits else 0.0 for k in ks}


def correct_matrix(references, items: int) -> np.ndarray:
    """(queries, items) bool matrix from each query's correct item ids."""
    matrix = np.zeros((len(references), items), dtype=bool)
    for query, correct in enumerate(references):
        ids = np.asarray(correct, dtype=np.int64)
        if len(ids) == 0:
            raise ValueError(f"Query {query} has no correct item; every query needs at least one.")
        if ids.min() < 0 or ids.max() >= items:
            raise ValueError(f"Query {query} names item ids {ids.tolist()} outside 0..{items - 1}.")
        matrix[query, ids] = True
    return matrix


def check_ks(ks) -> list[int]:
    ks = [int(k) for k in ([ks] if np.isscalar(ks) else ks)]
    if not ks or min(ks) < 1:
        raise ValueError(f"k must be positive integers, got {ks}.")
    return ks


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RecallAtK(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
            reference_urls=["https://arxiv.org/abs/1412.2306"],
        )

    def _compute(self, predictions, references, k=(1, 5, 10), ranked=False, both_directions=True, query_name="image",
                 item_name="text"):  # fmt: skip
        ks = check_ks(k)
        forward, backward = f"{query_name}_to_{item_name}", f"{item_name}_to_{query_name}"
        if ranked:
            rankings = [[int(item) for item in ranking] for ranking in predictions]
            if any(len(correct) == 0 for correct in references):
                raise ValueError("Every query needs at least one correct item id in references.")
            results = {
                f"{forward}_R@{key}": value for key, value in recall_of_rankings(rankings, references, ks).items()
            }
            items = len({item for ranking in rankings for item in ranking})
        else:
            lengths = {len(row) for row in predictions}
            if len(lengths) > 1:
                raise ValueError(f"Every prediction must score all items; got rows of lengths {sorted(lengths)}.")
            scores = np.asarray(predictions, dtype=np.float64)
            items = scores.shape[1] if scores.ndim == 2 else 0
            correct = correct_matrix(references, items)
            results = {f"{forward}_R@{key}": value for key, value in recall_at_k(scores, correct, ks).items()}
            if both_directions:
                matched = correct.any(axis=0)  # items that some query is correct for
                reverse = recall_at_k(scores.T[matched], correct.T[matched], ks)
                results.update({f"{backward}_R@{key}": value for key, value in reverse.items()})
        results["mean_recall"] = float(np.mean(list(results.values())))
        return {**results, "queries": len(predictions), "items": items}
