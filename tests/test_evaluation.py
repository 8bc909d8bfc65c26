"""The zero-shot evaluation's pieces: scene captions, recall with duplicate captions, the corpus keeps prompts out."""

import json

import numpy as np
import pytest
import torch

from vlmixer.scripts import evaluate_zero_shot  # noqa: E402
from vlmixer.scripts import make_corpus  # noqa: E402


def test_scene_captions_count_and_name_the_objects():
    caption = evaluate_zero_shot.scene_caption(np.array([7, 8, 7]))
    assert caption == "a picture showing two sneakers and a bag."
    assert evaluate_zero_shot.scene_caption(np.array([1])) == "a picture showing a pair of trousers."


def test_scenes_are_seeded_and_tile_the_canvas():
    labels = np.arange(50) % 10
    first, again = evaluate_zero_shot.make_scenes(labels, 20, seed=3), evaluate_zero_shot.make_scenes(labels, 20, seed=3)
    assert [s["caption"] for s in first] == [s["caption"] for s in again]
    for scene in first:
        assert 2 <= len(scene["members"]) <= 4 and len(set(scene["members"])) == len(scene["members"])
        assert scene["boxes"][0][0] == 0.0 and scene["boxes"][-1][2] == 1.0


def test_recall_counts_any_correct_item_within_k():
    similarity = torch.tensor([[0.9, 0.8, 0.1], [0.1, 0.2, 0.3], [0.5, 0.9, 0.7]])
    correct = torch.tensor([[False, True, False], [True, False, False], [False, False, True]])
    recall = evaluate_zero_shot.recall_at(similarity, correct, ks=(1, 2, 3))
    assert recall == pytest.approx({1: 0.0, 2: 2 / 3, 3: 1.0})


def test_corpus_keeps_the_evaluation_phrasings_out(tmp_path):
    counts = make_corpus.main(["--output_file", str(tmp_path / "corpus.txt"), "--sentences", "2000"])
    lines = (tmp_path / "corpus.txt").read_text().splitlines()
    assert len(lines) == counts["sentences"] and counts["with_grounded_words"] > 0.9 * counts["sentences"]
    assert not any(make_corpus.EVALUATION_PHRASINGS.match(line) for line in lines)
    assert not any(" a overcoat" in line or "a picture showing" in line for line in lines)


def test_the_recorded_prompt_round_trips_and_bad_records_are_named(tmp_path):
    assert evaluate_zero_shot.recorded_prompt(str(tmp_path)) == evaluate_zero_shot.PROMPT_TEMPLATES[0]  # no record
    figures = {key: None for key in evaluate_zero_shot.RECORDED_FIGURES} | {"prompt": "a {}.", "zero_shot_top1": 0.8,
                                                                          "model": "left out"}  # fmt: skip
    evaluate_zero_shot.write_eval_results(tmp_path, figures)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["eval_results.json"]  # no partial file left
    assert "model" not in json.loads((tmp_path / "eval_results.json").read_text())
    assert evaluate_zero_shot.recorded_prompt(str(tmp_path)) == "a {}."

    record = tmp_path / "eval_results.json"
    record.write_text(json.dumps({"eval_accuracy": 0.9}))  # a Trainer's record: metrics, no prompt
    assert evaluate_zero_shot.recorded_prompt(str(tmp_path)) == evaluate_zero_shot.PROMPT_TEMPLATES[0]
    record.write_text('{"prompt": "a {}.", ')  # cut short
    with pytest.raises(ValueError, match="eval_results.json is not valid JSON"):
        evaluate_zero_shot.recorded_prompt(str(tmp_path))
    record.write_text(json.dumps({"prompt": "a photo."}))
    with pytest.raises(ValueError, match="exactly one"):
        evaluate_zero_shot.recorded_prompt(str(tmp_path))
