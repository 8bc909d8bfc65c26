"""The shipped `evaluate` metric modules against hand-computed values, loaded offline from their folders."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from vlmixer.processing.metrics import METRIC_NAMES, metric_path
from vlmixer.processing.metrics.caption_metrics import caption_metrics
from vlmixer.processing.metrics.recall_at_k.recall_at_k import recall_at_k
from vlmixer.processing.metrics.vqa_accuracy.vqa_accuracy import normalize_answer

from .conftest import REPO_ROOT


HAS_JAVA = caption_metrics.java_runs()
needs_java = pytest.mark.skipif(not HAS_JAVA, reason="java is not installed")


@pytest.fixture(scope="module")
def metrics():
    import evaluate

    return {name: evaluate.load(metric_path(name)) for name in METRIC_NAMES}


# ---------------------------------------------------------------------------------------------- recall@k

SIMILARITY = [[0.9, 0.8, 0.1], [0.1, 0.2, 0.3], [0.5, 0.9, 0.7]]  # 3 images x 3 texts


def test_recall_at_k_in_both_directions_by_hand(metrics):
    # image 0 ranks texts 0, 1, 2 (correct: 1 at rank 2); image 1 ranks 2, 1, 0 (correct 0 at rank 3); image 2 ranks
    # 1, 2, 0 (correct 2 at rank 2). Text 0 ranks images 0, 2, 1 (correct: 1 at rank 3); text 1 ranks 2, 0, 1
    # (correct 0 at rank 2); text 2 ranks 2, 1, 0 (correct 2 at rank 1).
    result = metrics["recall_at_k"].compute(predictions=SIMILARITY, references=[[1], [0], [2]], k=[1, 2, 3])
    assert result == pytest.approx({
        "image_to_text_R@1": 0.0, "image_to_text_R@2": 2 / 3, "image_to_text_R@3": 1.0,
        "text_to_image_R@1": 1 / 3, "text_to_image_R@2": 2 / 3, "text_to_image_R@3": 1.0,
        "mean_recall": (0 + 2 / 3 + 1 + 1 / 3 + 2 / 3 + 1) / 6, "queries": 3, "items": 3,
    })  # fmt: skip


def test_recall_with_several_correct_items_and_an_unmatched_text(metrics):
    # image 0: texts ranked 2, 1, 0, correct {0, 1} -> first hit at rank 2; image 1: ranked 0, 2, 1, correct {1} ->
    # rank 3. Text 2 is correct for no image and is left out of text-to-image; text 0 ranks images 1, 0 (correct 0:
    # rank 2), text 1 ranks 0, 1 (both correct: rank 1).
    result = metrics["recall_at_k"].compute(predictions=[[0.1, 0.5, 0.9], [0.8, 0.2, 0.3]], references=[[0, 1], [1]],
                                            k=[1, 2], query_name="scene", item_name="caption")  # fmt: skip
    assert result["scene_to_caption_R@1"] == 0.0 and result["scene_to_caption_R@2"] == 0.5
    assert result["caption_to_scene_R@1"] == 0.5 and result["caption_to_scene_R@2"] == 1.0


def test_recall_from_ranked_lists(metrics):
    result = metrics["recall_at_k"].compute(predictions=[[2, 0, 1], [0, 1, 2]], references=[[1], [0]], k=[1, 2, 3],
                                            ranked=True)  # fmt: skip
    assert (result["image_to_text_R@1"], result["image_to_text_R@2"], result["image_to_text_R@3"]) == (0.5, 0.5, 1.0)
    assert "text_to_image_R@1" not in result


def test_recall_refuses_bad_input(metrics):
    recall = metrics["recall_at_k"]
    with pytest.raises(ValueError, match="no correct item"):
        recall.compute(predictions=SIMILARITY, references=[[1], [], [2]])
    with pytest.raises(ValueError, match="outside"):
        recall.compute(predictions=SIMILARITY, references=[[1], [3], [2]])
    with pytest.raises(ValueError, match="lengths"):
        recall.compute(predictions=[[0.1, 0.2], [0.3]], references=[[0], [0]])
    with pytest.raises(ValueError, match="NaN"):
        recall_at_k(np.array([[np.nan]]), np.array([[True]]))


def test_recall_function_takes_tensors_as_the_zero_shot_evaluation_passes_them():
    similarity = torch.tensor(SIMILARITY)
    correct = torch.tensor([[False, True, False], [True, False, False], [False, False, True]])
    assert recall_at_k(similarity, correct, ks=(1, 2, 3)) == pytest.approx({1: 0.0, 2: 2 / 3, 3: 1.0})
    assert recall_at_k(similarity.T, correct.T, ks=(1,)) == pytest.approx({1: 1 / 3})


# ---------------------------------------------------------------------------------------------- VQA accuracy


@pytest.mark.parametrize(
    "humans_who_said_it, expected",
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],  # mean over the 10 leave-one-out subsets
)
def test_vqa_accuracy_is_the_official_leave_one_out_average(metrics, humans_who_said_it, expected):
    answers = ["2"] * humans_who_said_it + ["3"] * (10 - humans_who_said_it)
    result = metrics["vqa_accuracy"].compute(predictions=["two"], references=[answers])
    # e.g. 2 of 10: leaving out one of the two leaves 1 match (1/3), leaving out another leaves 2 (2/3): (2/3 + 16/3)/10
    assert result["accuracy"] == pytest.approx(expected)


def test_vqa_answers_are_normalised_on_both_sides():
    assert normalize_answer("Two!") == "2"
    assert normalize_answer("The T-shirt.") == normalize_answer("t-shirt") == "t shirt"
    assert normalize_answer("dont know") == "don't know"
    assert normalize_answer("an ankle boot") == "ankle boot"
    assert normalize_answer("3.5") == "3.5"
    assert normalize_answer("yes, it is") == "yes it is"


def test_vqa_soft_targets_single_answers_and_question_types(metrics):
    vqa = metrics["vqa_accuracy"]
    soft = [{"answers": ["2", "3"], "scores": [1.0, 0.3]}] * 3 + [{"answers": ["yes"], "scores": [1.0]}]
    result = vqa.compute(predictions=["two", "three", "4", "Yes"], references=soft,
                         question_types=["count", "count", "count", "exists"])  # fmt: skip
    assert result["accuracy"] == pytest.approx((1.0 + 0.3 + 0.0 + 1.0) / 4)
    assert result["accuracy_by_type"] == pytest.approx({"count": 1.3 / 3, "exists": 1.0})
    assert vqa.compute(predictions=["bag", "coat"], references=[["bag"], ["sneaker"]])["accuracy"] == 0.5
    assert vqa.compute(predictions=["Two"], references=[["2"]], normalize=False)["accuracy"] == 0.0
    with pytest.raises(ValueError, match="one score per answer"):
        vqa.compute(predictions=["2"], references=[{"answers": ["2", "3"], "scores": [1.0]}])


# ---------------------------------------------------------------------------------------------- captions

PAIR_PREDICTIONS = ["a bag and two sneakers", "a dress and a coat"]
PAIR_REFERENCES = [["A bag and two sneakers."], ["a t-shirt, a dress and a coat"]]


def test_identical_captions_score_the_maximum(metrics):
    captions = ["red bag on wooden floor", "two small shoes near door"]  # no word shared: every n-gram has idf > 0
    result = metrics["caption_metrics"].compute(predictions=captions, references=[[c] for c in captions], meteor=False)
    for n in range(1, 5):
        assert result[f"Bleu_{n}"] == pytest.approx(1.0, abs=1e-6)
    assert result["ROUGE_L"] == pytest.approx(1.0) and result["CIDEr"] == pytest.approx(10.0)


def test_bleu_rouge_and_cider_by_hand_and_as_pycocoevalcap_gives_them(metrics):
    result = metrics["caption_metrics"].compute(predictions=PAIR_PREDICTIONS, references=PAIR_REFERENCES, meteor=False)
    # Every n-gram of both predictions is in its reference: BLEU is the brevity penalty exp(1 - 12 / 10) for 10
    # predicted and 12 reference tokens (punctuation dropped).
    for n in range(1, 5):
        assert result[f"Bleu_{n}"] == pytest.approx(math.exp(-0.2), abs=1e-8)
    # ROUGE-L (beta 1.2): 1 for the first; the second has LCS 5 of 5 and 7 tokens: P = 1, R = 5/7.
    second = (1 + 1.2**2) * (5 / 7) / (5 / 7 + 1.2**2)
    assert result["ROUGE_L"] == pytest.approx((1 + second) / 2)
    assert result["CIDEr"] == pytest.approx(8.682970941451732, rel=1e-9)  # pycocoevalcap 1.2's CIDEr-D
    worse = metrics["caption_metrics"].compute(predictions=["a coat", "two bags"], references=PAIR_REFERENCES, meteor=False)
    assert worse["Bleu_1"] < result["Bleu_1"] and worse["CIDEr"] < result["CIDEr"] and worse["ROUGE_L"] < result["ROUGE_L"]


def test_single_image_notes_that_cider_needs_more_images(metrics):
    result = metrics["caption_metrics"].compute(predictions=["a bag"], references=[["a bag"]], meteor=False)
    assert result["CIDEr"] == 0.0 and any("CIDEr" in note for note in result["notes"])


@needs_java
def test_meteor_through_java_and_the_ptb_tokenizer(metrics):
    result = metrics["caption_metrics"].compute(predictions=PAIR_PREDICTIONS, references=PAIR_REFERENCES)
    assert result["tokenizer"] == "ptb" and result["notes"] == []
    assert result["METEOR"] == pytest.approx(0.46704219956634285, abs=1e-6)  # METEOR 1.5, as pycocoevalcap runs it


@needs_java
def test_the_python_tokenizer_matches_ptb_on_task_captions():
    captions = ["a grid of clothes: a bag, two t-shirts and an ankle boot.", "A Sneaker in the top left corner!",
                "there is no pair of trousers in the picture.", "Don't (really) know; it's a coat..."]  # fmt: skip
    assert caption_metrics.simple_tokenize(captions) == caption_metrics.ptb_tokenize(captions)


def test_without_java_captions_use_the_python_tokenizer_and_skip_meteor(monkeypatch):
    monkeypatch.setattr(caption_metrics, "java_runs", lambda: False)
    result = caption_metrics.caption_scores(PAIR_PREDICTIONS, PAIR_REFERENCES)
    assert result["tokenizer"] == "simple" and "METEOR" not in result
    assert any("METEOR omitted" in note for note in result["notes"])
    assert result["Bleu_1"] == pytest.approx(math.exp(-0.2), abs=1e-8)
    with pytest.raises(RuntimeError, match="METEOR needs Java"):
        caption_metrics.caption_scores(PAIR_PREDICTIONS, PAIR_REFERENCES, meteor=True)
    with pytest.raises(ValueError, match="at least one reference"):
        caption_metrics.caption_scores(["a bag"], [[]])


# ---------------------------------------------------------------------------------------------- offline loading


def test_modules_load_offline_with_the_network_refused(tmp_path):
    """A fresh interpreter and module cache, the Hub marked offline and every socket connection refused."""
    code = f"""
import json, socket

def refuse(*args, **kwargs):
    raise OSError("network call")

socket.socket.connect = refuse
socket.create_connection = refuse
import evaluate
from vlmixer.processing.metrics import METRIC_NAMES, metric_path

loaded = {{name: evaluate.load(metric_path(name)) for name in METRIC_NAMES}}
figures = {{
    "recall": loaded["recall_at_k"].compute(predictions={SIMILARITY}, references=[[1], [0], [2]], k=[1]),
    "vqa": loaded["vqa_accuracy"].compute(predictions=["yes"], references=[["yes", "yes", "no"]]),
    "captions": loaded["caption_metrics"].compute(predictions=["a bag", "a coat"], references=[["a bag"], ["a coat"]],
                                                  meteor=False, tokenizer="simple"),
    "info": {{name: [bool(m.description), bool(m.citation), str(m.features)] for name, m in loaded.items()}},
}}
print(json.dumps(figures))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["recall"]["image_to_text_R@1"] == 0.0 and figures["recall"]["text_to_image_R@1"] == pytest.approx(1 / 3)
    assert figures["vqa"]["accuracy"] == pytest.approx(4 / 9)  # leave-one-out: (1/3 + 1/3 + 2/3) / 3
    assert figures["captions"]["ROUGE_L"] == 1.0
    assert all(description and citation for description, citation, _ in figures["info"].values())
    assert (tmp_path / "modules" / "evaluate_modules" / "metrics").is_dir()


def test_metric_path_points_at_each_module_script():
    for name in METRIC_NAMES:
        assert os.path.isfile(os.path.join(metric_path(name), f"{name}.py"))
        assert os.path.commonpath([metric_path(name), str(REPO_ROOT / "processing")]) == str(REPO_ROOT / "processing")
    with pytest.raises(ValueError, match="Unknown metric"):
        metric_path("bleurt")
