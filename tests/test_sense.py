"""The matcher's sense model (issue 17): precision and recall on the hand-labelled set, the corpus check that
pre-training runs once and caches, and the training script."""

import json
from pathlib import Path

import pytest
from datasets import load_dataset

from vlmixer.processing import ConceptVocabulary
from vlmixer.processing.sense import REJECTED_COLUMN, SENSE_MODEL_DIR, SenseModel, check_corpus_senses, rejected_mentions
from vlmixer.scripts import train_sense_model
from vlmixer.scripts.train_sense_model import matcher_scores, read_labelled

from .conftest import REPO_ROOT


LABELLED = REPO_ROOT / "tests" / "data" / "matcher_labelled.jsonl"


@pytest.fixture(scope="module")
def sense_model() -> SenseModel:
    return SenseModel.from_pretrained()


# (precision, recall) floors: what the rules, then the shipped sense model, reached when it was trained (rounded down)
SENSE_FLOOR = {"all": (0.965, 0.955), "digits": (0.98, 0.94), "coco80": (0.97, 0.965), "fashion_mnist": (0.94, 0.98),
               "shapes": (0.925, 0.935)}  # fmt: skip


def test_the_matcher_with_the_sense_model_on_the_labelled_set(sense_model):
    scores = matcher_scores(read_labelled([LABELLED]), sense_model)
    for name, (precision, recall) in SENSE_FLOOR.items():
        assert scores[name][0] >= precision and scores[name][1] >= recall, (name, scores[name])


def test_the_readme_table_is_the_recorded_figures():
    """The README's precision / recall table holds exactly what the training script recorded in sense_model.json."""
    recorded = json.loads((SENSE_MODEL_DIR / "sense_model.json").read_text())
    readme = (REPO_ROOT / "README.md").read_text()
    for name, label in (("coco80", "| COCO-80 ("), ("fashion_mnist", "| Fashion-MNIST ("), ("all", "| **all (")):
        row = next(line for line in readme.splitlines() if line.startswith(label))
        cells = [cell.strip(" *") for cell in row.split("|")[2:5]]
        expected = [recorded[f"evaluation_{kind}"][name] for kind in ("spelling_only", "rules", "rules_and_model")]
        assert cells == [f"{p:.3f} / {r:.3f}" for p, r in expected], (name, cells)
    assert recorded["evaluation_rules_and_model"] == matcher_scores(read_labelled([LABELLED]), SenseModel.from_pretrained())


def test_the_readme_trap_experiment_is_its_records():
    """The trap table's zero-shot and probe accuracies are the three runs' evaluation records in results/sense_traps/."""
    readme = (REPO_ROOT / "README.md").read_text()
    for name, label in (("without_traps", "| without the traps,"), ("traps_checked", "| with the traps, rules"),
                        ("traps_spelling_only", "| with the traps, spelling only")):  # fmt: skip
        record = json.loads((REPO_ROOT / "results" / "sense_traps" / f"{name}.json").read_text())
        row = next(line for line in readme.splitlines() if line.startswith(label))
        zero_shot, probe = (cell.strip() for cell in row.split("|")[3:5])
        assert zero_shot.startswith(f"{record['zero_shot_top1']:.1%}") and probe == f"{record['linear_probe_top1']:.1%}", name


def test_the_readme_demo_with_the_sense_model_is_its_record():
    """The README's Fashion-MNIST demo figures with the sense model on are the run's recorded JSON line."""
    record = json.loads((REPO_ROOT / "results" / "vlmixer-small-sense-seed0.json").read_text())
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    quoted = (f"reached **{record['zero_shot_top1']:.1%}** zero-shot, {record['reloaded_zero_shot_top1']:.1%} reloaded as "
              f"remote code, linear probe {record['linear_probe_top1']:.1%}")  # fmt: skip
    assert quoted in readme


def test_the_sense_model_rejects_other_senses_and_keeps_the_things(sense_model):
    shapes = ConceptVocabulary.from_class_names(train_sense_model.SHAPES)
    sentences = ["She drew a red star on the flag.", "She sat in the square feeding pigeons.",
                 "Our social circle is tiny.", "Two squares were painted on the floor."]  # fmt: skip
    # the rules keep all four words (no verb, name, modifier nor idiom); the model rejects the place and the friends
    assert [len(shapes.find(sentence)) for sentence in sentences] == [1, 1, 1, 1]
    assert rejected_mentions(sentences, shapes, sense_model) == [[], [[15, 21]], [[11, 17]], []]
    assert rejected_mentions([], shapes, sense_model) == []


def test_number_words_and_numerals_are_left_to_the_noun_phrase_rule(sense_model):
    """The model never sees a function word, number word or numeral: `find` keeps those only in a noun phrase of their
    own, and what it keeps stays; an open-class word of the same vocabulary is still checked."""
    digits = train_sense_model.labelled_vocabulary("digits")
    assert digits.is_function_form("Seven") and digits.is_function_form("7") and not digits.is_function_form("sevens")
    sentences = ["The last digit was a 7.", "She wrote a seven on the board.", "He drew two sevens."]
    assert [len(digits.find(sentence)) for sentence in sentences] == [1, 1, 1]
    sense_model.threshold, threshold = 1.01, sense_model.threshold  # would reject every word it is asked about
    try:
        assert rejected_mentions(sentences, digits, sense_model) == [[], [], [[12, 18]]]
    finally:
        sense_model.threshold = threshold


def test_the_corpus_check_runs_once_and_is_cached_with_the_corpus(sense_model, tmp_path, monkeypatch):
    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_text("She sat in the square feeding pigeons.\nA star on the flag.\nNo shape here.\n")
    corpus = load_dataset("text", data_files=str(corpus_file), split="train", cache_dir=str(tmp_path / "cache"))
    shapes = ConceptVocabulary.from_class_names(train_sense_model.SHAPES)
    checked = check_corpus_senses(corpus, shapes, sense_model, fingerprint="corpus-shapes-model")
    assert checked[REJECTED_COLUMN] == [[[15, 21]], [], []]
    assert checked.cache_files and Path(checked.cache_files[0]["filename"]).parent == Path(corpus.cache_files[0]["filename"]).parent

    def fail(*args, **kwargs):
        raise AssertionError("the corpus was checked again")

    monkeypatch.setattr(SenseModel, "probabilities", fail)
    again = check_corpus_senses(corpus, shapes, sense_model, fingerprint="corpus-shapes-model")
    assert again[REJECTED_COLUMN] == checked[REJECTED_COLUMN]


def test_train_sense_model_writes_a_model_that_loads(tmp_path, capsys):
    lines = [json.dumps({"vocabulary": "shapes", "text": text, "expected": expected}) for text, expected in [
        ("A star on the flag.", [{"text": "star", "concept": "star"}]), ("The movie star smiled.", []),
        ("Draw a circle.", [{"text": "circle", "concept": "circle"}]), ("We came full circle.", []),
    ] * 5]  # fmt: skip
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    argv = ["--train_files", str(tmp_path / "train.jsonl"), "--output_dir", str(tmp_path / "model"), "--epochs", "1",
            "--lora_rank", "2", "--validation_share", "0.3", "--evaluation_file", "none",
            "--output", str(tmp_path / "figures.json")]  # fmt: skip
    figures = train_sense_model.main(argv)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == figures
    assert json.loads((tmp_path / "figures.json").read_text()) == figures
    assert figures["train_mentions"] + figures["validation_mentions"] == 20
    model = SenseModel.from_pretrained(tmp_path / "model")
    assert model.threshold == figures["threshold"] and model.probabilities([("A star.", 2, 6, "star")]).shape == (1,)
    with pytest.raises(SystemExit, match="exists: pass --overwrite_output_dir"):
        train_sense_model.main(argv)
    (tmp_path / "bad.jsonl").write_text('{"text": "no labels"}\n')
    with pytest.raises(SystemExit, match=r"bad.jsonl:1 is not a labelled sentence"):
        train_sense_model.main(["--train_files", str(tmp_path / "bad.jsonl"), "--output_dir", str(tmp_path / "m2")])
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(SystemExit, match="0 spelling matches"):
        train_sense_model.main(["--train_files", str(tmp_path / "empty.jsonl"), "--output_dir", str(tmp_path / "m3")])
    assert not (tmp_path / "m2").exists() and not (tmp_path / "m3").exists()  # nothing half-written


def test_pretraining_names_a_missing_or_damaged_sense_model(tmp_path):
    from vlmixer.scripts.pretrain import load_sense_model

    with pytest.raises(SystemExit, match=r"--sense_model .*nothing: .*holds no sense model"):
        load_sense_model(str(tmp_path / "nothing"))
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for path in SENSE_MODEL_DIR.iterdir():
        (damaged / path.name).write_bytes(path.read_bytes()[:1000] if path.suffix == ".safetensors" else path.read_bytes())
    with pytest.raises(SystemExit, match=r"--sense_model .*damaged: .*header"):
        load_sense_model(str(damaged))
    assert load_sense_model("none") is None
