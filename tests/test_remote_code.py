"""A saved folder must load for people who never installed this package: remote code, the Hub cache, pipelines."""

import json
import textwrap

import pytest
import torch
from transformers import pipeline

from vlmixer.modeling_vlmixer import (
    VLMixerForCaptioning,
    VLMixerForImageTextRetrieval,
    VLMixerForMaskedLM,
    VLMixerForQuestionAnswering,
    VLMixerForSequenceClassification,
    VLMixerForVisualReasoning,
)

from .conftest import run_isolated_python, tiny_batch, tiny_config
from .test_heads import caption_inputs, images, nlvr_batch


@pytest.fixture(scope="module")
def saved_minilm_mlm(tmp_path_factory, minilm_path):
    """vlmixer-small from the real MiniLM weights (with the EfficientNet-Lite0 backbone), saved with its tokenizer."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("saved") / "vlmixer-small"
    model = VLMixerForMaskedLM.from_bert_pretrained(minilm_path)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return folder, model.eval()


def test_folder_loads_as_remote_code_without_the_package(tmp_path):
    torch.manual_seed(0)
    model = VLMixerForMaskedLM(tiny_config()).eval()
    model.save_pretrained(tmp_path / "checkpoint")
    batch = tiny_batch(model.config)
    torch.save(batch, tmp_path / "batch.pt")
    expected = model(**batch).logits
    code = textwrap.dedent(
        """
        import torch
        from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM
        config = AutoConfig.from_pretrained("checkpoint", trust_remote_code=True)
        base = AutoModel.from_pretrained("checkpoint", trust_remote_code=True)
        mlm = AutoModelForMaskedLM.from_pretrained("checkpoint", trust_remote_code=True).eval()
        batch = torch.load("batch.pt", weights_only=True)
        torch.save(mlm(**batch).logits, "logits.pt")
        print(type(config).__module__, type(base).__name__, type(mlm).__name__)
        """
    )
    result = run_isolated_python(code, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    module, base_name, mlm_name = result.stdout.split()
    assert module.startswith("transformers_modules.") and module.endswith("configuration_vlmixer")
    assert (base_name, mlm_name) == ("VLMixerModel", "VLMixerForMaskedLM")
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt", weights_only=True), expected, atol=0, rtol=0)


def test_every_head_loads_as_remote_code_without_the_package(tmp_path):
    heads = {  # folder: (class, how the user without the package loads it, inputs)
        "vqa": (VLMixerForQuestionAnswering, "AutoModelForVisualQuestionAnswering", tiny_batch),
        "classification": (VLMixerForSequenceClassification, "AutoModelForSequenceClassification", tiny_batch),
        "captioning": (VLMixerForCaptioning, "AutoModelForImageTextToText", lambda config: caption_inputs()),
        "retrieval": (VLMixerForImageTextRetrieval, None, lambda config: caption_inputs()),
        "reasoning": (VLMixerForVisualReasoning, None, nlvr_batch),
    }
    expected = {}
    for folder, (cls, _, inputs) in heads.items():
        torch.manual_seed(0)
        model = cls(tiny_config(num_labels=3)).eval()
        model.save_pretrained(tmp_path / folder)
        torch.save(inputs(model.config), tmp_path / f"{folder}.pt")
        expected[folder] = model(**inputs(model.config)).logits
    features, boxes, region_mask = images()
    torch.save(dict(visual_features=features, visual_boxes=boxes, region_mask=region_mask), tmp_path / "images.pt")
    expected["generated"] = VLMixerForCaptioning.from_pretrained(tmp_path / "captioning").generate(
        visual_features=features, visual_boxes=boxes, region_mask=region_mask, max_new_tokens=5, num_beams=2
    )
    loaders = {folder: auto or cls.__name__ for folder, (cls, auto, _) in heads.items()}
    code = textwrap.dedent(
        f"""
        import torch, transformers
        from transformers.dynamic_module_utils import get_class_from_dynamic_module
        names = []
        for folder, loader in {loaders!r}.items():
            if loader.startswith("Auto"):
                model = getattr(transformers, loader).from_pretrained(folder, trust_remote_code=True)
            else:  # no Auto class for this task: the class itself, from the folder's code
                model = get_class_from_dynamic_module("modeling_vlmixer." + loader, folder).from_pretrained(folder)
            model.eval()
            names.append(type(model).__module__.split(".")[0] + ":" + type(model).__name__)
            torch.save(model(**torch.load(folder + ".pt", weights_only=True)).logits, folder + "_logits.pt")
            if folder == "captioning":
                images = torch.load("images.pt", weights_only=True)
                torch.save(model.generate(**images, max_new_tokens=5, num_beams=2), "generated.pt")
        print(" ".join(names))
        """
    )
    result = run_isolated_python(code, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [
        "transformers_modules:VLMixerForQuestionAnswering", "transformers_modules:VLMixerForSequenceClassification",
        "transformers_modules:VLMixerForCaptioning", "transformers_modules:VLMixerForImageTextRetrieval",
        "transformers_modules:VLMixerForVisualReasoning",
    ]  # fmt: skip
    for folder in heads:
        got = torch.load(tmp_path / f"{folder}_logits.pt", weights_only=True)
        torch.testing.assert_close(got, expected[folder], atol=0, rtol=0, msg=folder)
    torch.testing.assert_close(torch.load(tmp_path / "generated.pt", weights_only=True), expected["generated"])


def test_remote_code_refuses_to_run_without_trust(tmp_path):
    VLMixerForMaskedLM(tiny_config()).save_pretrained(tmp_path / "checkpoint")
    code = "from transformers import AutoModel\nAutoModel.from_pretrained('checkpoint')\n"
    result = run_isolated_python(code, tmp_path)
    assert result.returncode != 0 and "trust_remote_code" in result.stderr


def populate_hub_cache(cache: "Path", repo_id: str, folder: "Path") -> None:
    """Lays `folder` out as `huggingface_hub` caches a downloaded model repo (snapshots + refs/main)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        if file.is_file():
            (snapshot / file.name).write_bytes(file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def test_hub_repo_name_loads_offline_from_the_cache(saved_minilm_mlm, tmp_path):
    folder, model = saved_minilm_mlm
    populate_hub_cache(tmp_path / "hub", "org/vlmixer-small", folder)
    code = textwrap.dedent(
        """
        import torch
        from transformers import AutoModel, AutoModelForMaskedLM, pipeline
        model = AutoModel.from_pretrained("org/vlmixer-small", trust_remote_code=True)
        fill = pipeline("fill-mask", model="org/vlmixer-small", trust_remote_code=True)
        best = fill("a dog is sitting on the [MASK] .")[0]
        print(type(model).__name__, model.config.backbone_id, best["sequence"].startswith("a dog is sitting on the"))
        """
    )
    result = run_isolated_python(code, tmp_path, {"HF_HUB_CACHE": str(tmp_path / "hub")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["VLMixerModel", "efficientnet-lite0", "True"]


def test_backbone_weights_travel_with_the_checkpoint(saved_minilm_mlm):
    folder, model = saved_minilm_mlm
    stem = model.vlmixer.vision_backbone._conv_stem.weight
    reloaded = VLMixerForMaskedLM.from_pretrained(folder)
    torch.testing.assert_close(reloaded.vlmixer.vision_backbone._conv_stem.weight, stem, atol=0, rtol=0)
    assert not any(p.requires_grad for p in reloaded.vlmixer.vision_backbone.parameters())
    with_info, info = VLMixerForMaskedLM.from_pretrained(folder, output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"]
    assert not any(p.requires_grad for p in with_info.vlmixer.vision_backbone.parameters())


def test_fill_mask_pipeline_from_a_saved_folder(saved_minilm_mlm):
    folder, _ = saved_minilm_mlm
    fill = pipeline("fill-mask", model=str(folder))
    predictions = fill("paris is the capital of [MASK] .", top_k=5)
    assert len(predictions) == 5
    assert all(p["sequence"].startswith("paris is the capital of") for p in predictions)
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1


def test_config_json_lists_every_auto_class(saved_minilm_mlm):
    folder, _ = saved_minilm_mlm
    config = json.loads((folder / "config.json").read_text())
    assert set(config["auto_map"]) >= {"AutoConfig", "AutoModel", "AutoModelForMaskedLM"}
    assert config["architectures"] == ["VLMixerForMaskedLM"]
