"""Model cards (scripts/cards.py): the demo card that model_card.md and a folder's eval_results.json give, parsed back
with huggingface_hub.ModelCard.load (offline, from the file); pretrain.py's card; the card checks push_to_hub.py
makes. And the one-source rule: the README's results table, the card and the recorded eval_results.json agree."""

import ast
import json
import re
import shutil
from pathlib import Path

import pytest
from huggingface_hub import EvalResult, ModelCard

from vlmixer.scripts import cards

from .conftest import REPO_ROOT


RESULTS = REPO_ROOT / "results"
SEED0, SEED1 = RESULTS / "vlmixer-small-seed0", RESULTS / "vlmixer-small-seed1"
README = REPO_ROOT / "README.md"


def demo_settings() -> dict:
    """The settings scripts/demo.py passes to write_demo_card, each as the name it is given there (read from its
    source, so that the test sees what the demo fills)."""
    for node in ast.walk(ast.parse((REPO_ROOT / "scripts" / "demo.py").read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "write_demo_card":
            return {key.value: f"<{key.value}>" for key in node.args[1].keys}
    raise AssertionError("scripts/demo.py no longer calls cards.write_demo_card(folder, {...})")


def record(folder: Path = SEED0) -> dict:
    return json.loads((folder / cards.EVAL_RESULTS_NAME).read_text())


@pytest.fixture
def demo_folder(tmp_path) -> Path:
    """A folder holding seed 0's record and the card demo.py writes from it."""
    folder = tmp_path / "vlmixer-small"
    folder.mkdir()
    shutil.copy(SEED0 / cards.EVAL_RESULTS_NAME, folder)
    cards.write_demo_card(folder, demo_settings())
    return folder


def figures_in(cell: str) -> list[float]:
    """The percentages of a table cell, as fractions: '**82.5%**' -> [0.825]."""
    return [float(number) / 100 for number in re.findall(r"(\d+(?:\.\d+)?)%", cell)]


def table_row(text: str, first_cell: str) -> list[str]:
    """The cells of the one markdown table row whose first cell starts with `first_cell`."""
    rows = [line for line in text.splitlines() if line.startswith(f"| {first_cell}")]
    assert len(rows) == 1, f"{len(rows)} rows start with {first_cell!r}"
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def recorded_figures(record: dict, *keys: str) -> list[float]:
    """The record's figures at `keys` ('zero_shot_top1' or a retrieval key), rounded as the tables print them."""
    values = [record[key] if key in record else record["retrieval"][key] for key in keys]
    return [float(cards.percent(value).rstrip("%")) / 100 for value in values]


I2T = ("image_to_text_R@1", "image_to_text_R@5", "image_to_text_R@10")
T2I = ("text_to_image_R@1", "text_to_image_R@5", "text_to_image_R@10")
CHANCE = ("chance_R@1", "chance_R@5", "chance_R@10")


# ---------------------------------------------------------------------------------------------- the demo card


def test_demo_card_model_index_parses_and_equals_eval_results(demo_folder):
    card = ModelCard.load(demo_folder / "README.md")  # a local file: no network
    expected = record()
    found = {(r.task_type, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert found[("zero-shot-image-classification", cards.ZERO_SHOT_METRIC)] == expected["zero_shot_top1"]
    for key, name, _ in cards.RETRIEVAL_METRICS:
        assert found[("image-text-retrieval", name)] == expected["retrieval"][key], name
    assert len(found) == 1 + len(cards.RETRIEVAL_METRICS)
    assert {r.dataset_type for r in card.data.eval_results} == {"zalando-datasets/fashion_mnist"}
    assert {r.dataset_split for r in card.data.eval_results} == {"test"}
    assert card.data.to_dict()["model-index"][0]["name"] == "vlmixer-small"
    assert cards.card_problems(demo_folder) == []


def test_demo_card_metadata_has_no_widget_and_the_current_dataset_id(demo_folder):
    data = ModelCard.load(demo_folder / "README.md").data.to_dict()
    assert data["library_name"] == "transformers" and data["license"] == "apache-2.0"
    assert data["pipeline_tag"] == "zero-shot-image-classification"
    assert data["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert data["datasets"] == ["zalando-datasets/fashion_mnist"]  # not the outdated "fashion_mnist"
    assert "custom_code" in data["tags"] and {"accuracy", "recall"} <= set(data["metrics"])
    assert "widget" not in data  # Hub widgets cannot run custom code


def test_demo_card_text_is_filled_from_the_record(demo_folder):
    text = ModelCard.load(demo_folder / "README.md").text
    assert "$" not in text  # every placeholder filled, no stray dollar signs
    row = table_row(text, "Fashion-MNIST test classification")
    assert figures_in(row[1]) == recorded_figures(record(), "zero_shot_top1")
    assert figures_in(row[2]) == recorded_figures(record(), "chance", "linear_probe_top1")
    assert figures_in(table_row(text, "scene → caption")[1]) == recorded_figures(record(), *I2T)
    assert figures_in(table_row(text, "caption → scene")[1]) == recorded_figures(record(), *T2I)
    assert f'Classification prompt: "{record()["prompt"]}"' in text
    for needle in ("trust_remote_code=True", "AutoModel", "AutoProcessor", 'pipeline("zero-shot-image-classification"',
                   "## Intended use", "## Training data and procedure", "## Evaluation", "## Limitations", "## Citation",
                   "2206.08919", "Wang, Teng and Jiang, Wenhao and Lu, Zhichao and Zheng, Feng and Cheng, Ran and Yin, "
                   "Chengguo and Luo, Ping", "Cross-Modal CutMix", "<max_steps>", "<per_class>"):  # fmt: skip
        assert needle in text, needle


def test_template_placeholders_are_exactly_what_the_record_and_demo_fill():
    filled = set(cards.record_fields(record())) | set(demo_settings())
    assert cards.template_placeholders() == filled
    for figure in ("zero_shot_top1", "linear_probe_top1", "i2t_r1", "t2i_r10", "chance_r1", "chance"):
        assert figure in cards.template_placeholders()  # the figures stay placeholders, never hard-coded


def test_a_placeholder_left_unfilled_is_an_error():
    settings = demo_settings()
    del settings["max_steps"]
    with pytest.raises(KeyError, match="max_steps"):
        cards.demo_card(record(), settings, "vlmixer-small")


# ---------------------------------------------------------------------------------------------- one source of figures


def test_readme_results_table_equals_the_recorded_eval_results():
    text = README.read_text()
    seed0, seed1 = record(SEED0), record(SEED1)
    top1 = table_row(text, "classification top-1, all 10,000 test images")
    assert figures_in(top1[1]) == recorded_figures(seed0, "zero_shot_top1")
    assert figures_in(top1[2]) == recorded_figures(seed1, "zero_shot_top1")
    reference = figures_in(top1[3])
    assert [reference[0], reference[-1]] == recorded_figures(seed0, "chance", "linear_probe_top1")
    for first_cell, keys in (("scene → caption R@1", I2T), ("caption → scene R@1", T2I)):
        row = table_row(text, first_cell)
        assert figures_in(row[1]) == recorded_figures(seed0, *keys), first_cell
        assert figures_in(row[2]) == recorded_figures(seed1, *keys), first_cell
        assert figures_in(row[3]) == recorded_figures(seed0, *CHANCE) == recorded_figures(seed1, *CHANCE)
    assert f'Seed 0 chose "{seed0["prompt"]}"' in text and f'seed 1 "{seed1["prompt"]}"' in text


def test_readme_table_and_demo_card_agree(demo_folder):
    readme, card = README.read_text(), ModelCard.load(demo_folder / "README.md").text
    pairs = (("classification top-1, all", "Fashion-MNIST test classification"), ("scene → caption R@1", "scene → caption R@1"),
             ("caption → scene R@1", "caption → scene R@1"))  # fmt: skip
    for readme_row, card_row in pairs:
        assert figures_in(table_row(readme, readme_row)[1]) == figures_in(table_row(card, card_row)[1])


def test_the_card_ablations_are_the_readme_ablations():
    template = cards.CARD_TEMPLATE.read_text()
    rows = [line for line in template.splitlines() if re.match(r"\| (without CMC|CMC \+|\+ patch|default|upper bound)", line)]
    assert len(rows) == 9
    readme = README.read_text().splitlines()
    for row in rows:
        assert row in readme, row


def test_the_app_reads_its_prompt_from_the_same_record():
    from vlmixer.scripts.evaluate_zero_shot import recorded_prompt

    assert recorded_prompt(str(SEED0)) == record(SEED0)["prompt"]
    assert recorded_prompt(str(SEED1)) == record(SEED1)["prompt"]


def test_readme_links_stay_inside_the_repository():
    targets = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    assert local, "no local links found: the pattern is broken"
    for target in local:
        path = (REPO_ROOT / target).resolve()
        assert path.is_relative_to(REPO_ROOT) and path.exists(), target
    assert "../shared" not in README.read_text()


# ---------------------------------------------------------------------------------------------- pretrain.py's card


def test_pretrained_card_has_settings_and_losses_and_no_model_index_without_results(tmp_path):
    card = cards.pretrained_card("run", {"max_steps": 2, "cmc_ratio": 0.5}, {"first_loss": 9.1, "last_loss": 7.2})
    cards.write_card(tmp_path, card)
    loaded = ModelCard.load(tmp_path / "README.md")
    data = loaded.data.to_dict()
    assert data["pipeline_tag"] == "feature-extraction" and data["library_name"] == "transformers"
    assert "model-index" not in data and "model_name" not in data and loaded.data.eval_results is None
    assert '"max_steps": 2' in loaded.text and '"last_loss": 7.2' in loaded.text


def test_pretrained_card_carries_a_model_index_with_results(tmp_path):
    cards.write_card(tmp_path, cards.pretrained_card("run", {}, {}, record()))
    found = cards.metric_values(ModelCard.load(tmp_path / "README.md").data.eval_results)
    assert found[("zero-shot-image-classification", cards.ZERO_SHOT_METRIC)] == record()["zero_shot_top1"]


# ---------------------------------------------------------------------------------------------- the checks


def test_a_card_that_disagrees_with_eval_results_is_found(demo_folder):
    card = demo_folder / "README.md"
    top1 = record()["zero_shot_top1"]
    card.write_text(card.read_text().replace(f"value: {top1}", "value: 0.9"))
    problems = cards.card_problems(demo_folder)
    assert len(problems) == 1 and "top-1 accuracy" in problems[0] and str(top1) in problems[0]


def test_a_card_whose_metadata_does_not_parse_is_found(demo_folder):
    (demo_folder / "README.md").write_text("---\nmodel-index: [unclosed\n---\n\ntext\n")
    assert "does not parse" in cards.card_problems(demo_folder)[0]


def test_a_trainer_card_with_its_own_metrics_passes(tmp_path):
    """A fine-tuned folder: the Trainer's eval_results.json holds its own metrics, the card its own model-index."""
    (tmp_path / "eval_results.json").write_text(json.dumps({"eval_accuracy": 0.34, "epoch": 1.0}))
    result = EvalResult(task_type="visual-question-answering", dataset_type="imagefolder", dataset_name="scenes",
                        metric_type="accuracy", metric_value=0.34)  # fmt: skip
    cards.write_card(tmp_path, cards.render(cards.card_data("vlmixer-vqa", "visual-question-answering", [result]), "# x"))
    assert cards.card_problems(tmp_path) == []


def test_a_trainer_card_gets_the_model_index_of_its_test_metrics(tmp_path):
    """transformers' TrainingSummary (what trainer.create_model_card() writes) has no model-index for our tasks;
    add_model_index adds the Trainer's test metrics to that card, and ModelCard.load parses them back."""
    from transformers.modelcard import TrainingSummary

    summary = TrainingSummary(model_name="vlmixer-vqa", finetuned_from="org/vlmixer-small", tasks="visual-question-answering",
                              dataset="scenes", dataset_tags="imagefolder", eval_results={"Vqa Accuracy": 0.34})  # fmt: skip
    (tmp_path / "README.md").write_text(summary.to_model_card())
    metrics = {"test_vqa_accuracy": 0.34, "test_exact_match": 0.3, "test_loss": 1.2, "test_runtime": 3.1,
               "test_samples_per_second": 30.0, "epoch": 1.0}  # fmt: skip
    results = cards.trainer_eval_results(metrics, "visual-question-answering", "imagefolder", "Fashion-MNIST scenes")
    cards.add_model_index(tmp_path, results)
    card = ModelCard.load(tmp_path / "README.md")
    assert {r.metric_name: r.metric_value for r in card.data.eval_results} == {"vqa_accuracy": 0.34, "exact_match": 0.3}
    assert card.data.to_dict()["model-index"][0]["name"] == "vlmixer-vqa"
    assert "Vqa Accuracy: 0.34" in card.text  # the Trainer's text stays
