"""The Hub side: a folder laid out as the Hugging Face cache holds a downloaded repository, loaded offline by someone
who never installed this package (Auto classes, processor with its gallery, every pipeline); scripts/push_to_hub.py
(checks, dry run without network, the upload with only the network calls mocked) for pre-trained and fine-tuned
folders and for the Space. The cards themselves: tests/test_cards.py."""

import json
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import EvalResult, ModelCard, SpaceCard
from transformers import AutoTokenizer, pipeline

from vlmixer import modeling_vlmixer
from vlmixer.modeling_vlmixer import VLMixerForPreTraining
from vlmixer.modeling_vlmixer.pipeline_vlmixer import save_pipelines
from vlmixer.processing import ConceptVocabulary, PatchGalleryBuilder, VLMixerProcessor
from vlmixer.processing.processing_vlmixer import efficientnet_image_processor
from vlmixer.scripts import cards

from .conftest import REPO_ROOT, run_isolated_python
from .test_cards import SEED0, demo_settings, record

TOP1 = record(SEED0)["zero_shot_top1"]  # the recorded figure a broken card disagrees with
from .test_pipelines import ANSWERS, LABELS, backbone_config, image_array


SCRIPTS = REPO_ROOT / "scripts"
PUSH = SCRIPTS / "push_to_hub.py"
VLMixerForQuestionAnswering = getattr(modeling_vlmixer.modeling_vlmixer, "VLMixerForQuestionAnswering", None)
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_demo_card(folder: Path) -> None:
    """What demo.py writes after its evaluation: the record (here seed 0's, from results/) and the card from it."""
    shutil.copy(SEED0 / cards.EVAL_RESULTS_NAME, folder)
    cards.write_demo_card(folder, demo_settings())


def tiny_processor(minilm_path) -> VLMixerProcessor:
    builder = PatchGalleryBuilder("efficientnet-lite0", 1280)
    rng = np.random.default_rng(0)
    for concept in ("dog", "person"):
        builder.add(concept, rng.normal(size=(3, 1280)), np.tile([0.1, 0.2, 0.6, 0.9], (3, 1)), np.arange(3), np.ones(3),
                    rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8))  # fmt: skip
    return VLMixerProcessor(AutoTokenizer.from_pretrained(minilm_path), efficientnet_image_processor(32), cmc_ratio=0.5,
                            backbone_id="efficientnet-lite0", concepts=ConceptVocabulary.coco80(), gallery=builder.build())  # fmt: skip


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory, minilm_path):
    """A complete tiny VLMixer folder as demo.py writes one: model, processor with gallery, code, pipelines, card."""
    torch.manual_seed(0)
    model = VLMixerForPreTraining(backbone_config()).eval()
    folder = tmp_path_factory.mktemp("hub") / "vlmixer-base"
    model.save_pretrained(folder)
    tiny_processor(minilm_path).save_pretrained(folder)
    save_pipelines(folder)
    write_demo_card(folder)
    return folder


@pytest.fixture(scope="module")
def vqa_hub_folder(tmp_path_factory, minilm_path):
    if VLMixerForQuestionAnswering is None:
        pytest.skip("VLMixerForQuestionAnswering not in modeling_vlmixer yet")
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("hub") / "vlmixer-vqa"
    VLMixerForQuestionAnswering(backbone_config(id2label=ANSWERS)).eval().save_pretrained(folder)
    tiny_processor(minilm_path).save_pretrained(folder)
    save_pipelines(folder)
    return folder


def populate_hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """Lays `folder` out as `huggingface_hub` caches a downloaded model repo: blobs, snapshots/<commit>, refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for index, file in enumerate(sorted(p for p in folder.iterdir() if p.is_file())):
        blob = repo / "blobs" / f"{index:040x}"
        shutil.copyfile(file, blob)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob.name))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)


# ---------------------------------------------------------------------------------------------- the Hub cache, offline


def test_repo_names_load_offline_from_the_hub_cache_without_the_package(hub_folder, request, tmp_path):
    """Exactly what a user who downloaded org/vlmixer-base runs, with HF_HUB_OFFLINE=1 and this package unimportable."""
    with_vqa = VLMixerForQuestionAnswering is not None
    populate_hub_cache(tmp_path / "hub", "org/vlmixer-base", hub_folder)
    if with_vqa:
        populate_hub_cache(tmp_path / "hub", "org/vlmixer-vqa", request.getfixturevalue("vqa_hub_folder"))
    image = image_array(11)
    np.save(tmp_path / "image.npy", image)
    expected = pipeline("zero-shot-image-classification", model=str(hub_folder), trust_remote_code=True, device=-1)(
        image, candidate_labels=LABELS
    )
    code = textwrap.dedent(
        f"""
        import json
        import numpy as np
        from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForPreTraining, AutoProcessor, pipeline
        image = np.load("image.npy")
        base = AutoModel.from_pretrained("org/vlmixer-base", trust_remote_code=True)
        pretraining = AutoModelForPreTraining.from_pretrained("org/vlmixer-base", trust_remote_code=True)
        mlm = AutoModelForMaskedLM.from_pretrained("org/vlmixer-base", trust_remote_code=True)
        processor = AutoProcessor.from_pretrained("org/vlmixer-base", trust_remote_code=True)
        mixed = processor(text=["a dog and a person"], cmc_ratio=1.0, seed=0)
        classifier = pipeline("zero-shot-image-classification", model="org/vlmixer-base", trust_remote_code=True, device=-1)
        fill = pipeline("fill-mask", model="org/vlmixer-base", trust_remote_code=True, device=-1)
        extract = pipeline("feature-extraction", model="org/vlmixer-base", trust_remote_code=True, device=-1)
        out = {{
            "classes": [type(o).__module__.split(".")[0] + ":" + type(o).__name__
                        for o in (base, pretraining, mlm, processor, classifier)],
            "gallery_patches": int(mixed["visual_features"].shape[0]),
            "zero_shot": classifier(image, candidate_labels={LABELS!r}),
            "fill": fill("a dog is sitting on the [MASK] .", top_k=3),
            "features": list(np.array(extract("a dog and a person")).shape),
        }}
        if {with_vqa!r}:
            vqa = pipeline("visual-question-answering", model="org/vlmixer-vqa", trust_remote_code=True, device=-1)
            out["vqa"] = vqa(image=image, question="what is it?", top_k=2)
        print(json.dumps(out))
        """
    )
    result = run_isolated_python(code, tmp_path, {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "home")})
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["classes"] == [
        "transformers_modules:VLMixerModel", "transformers_modules:VLMixerForPreTraining",
        "transformers_modules:VLMixerForMaskedLM", "transformers_modules:VLMixerProcessor",
        "transformers_modules:VLMixerZeroShotImageClassificationPipeline",
    ]  # fmt: skip
    assert got["gallery_patches"] == 2  # "dog" and "person" replaced by patches of the shipped gallery
    assert [p["label"] for p in got["zero_shot"]] == [p["label"] for p in expected]
    np.testing.assert_allclose([p["score"] for p in got["zero_shot"]], [p["score"] for p in expected], atol=1e-5)
    assert sum(p["score"] for p in got["zero_shot"]) == pytest.approx(1.0, abs=1e-5)
    assert len(got["fill"]) == 3 and got["features"][0] == 1 and got["features"][2] == 32
    if with_vqa:
        assert len(got["vqa"]) == 2 and {a["answer"] for a in got["vqa"]} <= set(ANSWERS.values())


# ---------------------------------------------------------------------------------------------- push_to_hub.py


def run_push(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(cwd or REPO_ROOT)}
    return subprocess.run([sys.executable, str(PUSH), *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


def load_push_module():
    from vlmixer.scripts import push_to_hub

    return push_to_hub


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection or HfApi construction fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.HfApi, "__init__", refuse)


def test_push_help_explains_the_flags():
    result = run_push("--help")
    assert result.returncode == 0, result.stderr
    for flag in ("--repo_id", "--private", "--commit_message", "--dry-run", "--output", "--add_pipelines", "--token",
                 "--space", "--model_id", "auto_map", "safetensors", "JSON", "model-index"):  # fmt: skip
        assert flag in result.stdout, flag


def test_dry_run_lists_exactly_the_files_and_sizes_without_network(hub_folder, tmp_path, no_network, capsys):
    (hub_folder / "optimizer.bin").write_bytes(b"pickled state")
    (hub_folder / ".hidden").write_text("x")
    try:
        figures = load_push_module().main([str(hub_folder), "--repo_id", "org/vlmixer-base", "--dry-run", "--output",
                                           str(tmp_path / "plan.json")])  # fmt: skip
    finally:
        (hub_folder / "optimizer.bin").unlink()
        (hub_folder / ".hidden").unlink()
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == figures == json.loads((tmp_path / "plan.json").read_text())
    expected = {p.name: p.stat().st_size for p in hub_folder.iterdir() if p.is_file()}
    assert {f["path"]: f["bytes"] for f in figures["files"]} == expected
    for name in ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "gallery.safetensors",
                 "concepts.json", "modeling_vlmixer.py", "processing_vlmixer.py", "pipeline_vlmixer.py", "README.md"):  # fmt: skip
        assert name in expected
    assert figures["total_bytes"] == sum(expected.values())
    assert {s["path"]: s["reason"] for s in figures["skipped"]} == {"optimizer.bin": "pickle", ".hidden": "hidden"}
    assert figures["dry_run"] is True and figures["ok"] is True and "commit_url" not in figures


def test_dry_run_from_the_command_line_prints_json_last(hub_folder):
    result = run_push(str(hub_folder), "--repo_id", "org/vlmixer-base", "--dry-run", "--private",
                      "--commit_message", "First upload")  # fmt: skip
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert (figures["private"], figures["commit_message"], figures["repo_id"]) == (True, "First upload", "org/vlmixer-base")
    assert "would upload model.safetensors" in result.stdout


def test_saved_folders_carry_their_pipelines_so_add_pipelines_adds_nothing(hub_folder, no_network):
    """save_pretrained writes custom_pipelines and copies pipeline_vlmixer.py; --add_pipelines is for older folders."""
    config = json.loads((hub_folder / "config.json").read_text())
    assert "zero-shot-image-classification" in config["custom_pipelines"]
    assert (hub_folder / "pipeline_vlmixer.py").exists()
    push = load_push_module()
    figures = push.main([str(hub_folder), "--repo_id", "org/x", "--dry-run", "--add_pipelines"])
    assert "pipeline_vlmixer.py" in {f["path"] for f in figures["files"]} and figures["added_pipelines"] == []


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda f: (f / "model.safetensors").unlink(), "model.safetensors"),
        (lambda f: (f / "config.json").unlink(), "config.json"),
        (lambda f: (f / "tokenizer.json").unlink(), "tokenizer.json"),
        (lambda f: (f / "processor_config.json").unlink(), "processor_config.json"),
        (lambda f: (f / "modeling_vlmixer.py").unlink(), "modeling_vlmixer.py"),  # named in auto_map
        (lambda f: (f / "pipeline_vlmixer.py").unlink(), "pipeline_vlmixer.py"),  # named in custom_pipelines
        (lambda f: (f / "gallery.py").unlink(), "gallery.py"),  # imported by processing_vlmixer.py
        (lambda f: (f / "gallery.safetensors").unlink(), "gallery.safetensors"),
        (lambda f: (f / "README.md").unlink(), "README.md"),
        (lambda f: (f / "README.md").write_text("accuracy $zero_shot_top1\n"), "$zero_shot_top1"),
        (lambda f: (f / "README.md").write_text((f / "README.md").read_text().replace(f"value: {TOP1}", "value: 0.9")),
         f"eval_results.json says {TOP1}"),
        (lambda f: (f / "README.md").write_text("---\nmodel-index: [unclosed\n---\n"), "does not parse"),
    ],
    ids=["weights", "config", "tokenizer", "processor", "auto_map code", "pipeline code", "relative import", "gallery",
         "card", "unfilled card", "card disagrees with eval_results", "card metadata"],  # fmt: skip
)
def test_incomplete_folders_are_refused_before_any_upload(hub_folder, tmp_path, breakage, message, no_network, capsys):
    folder = tmp_path / "broken"
    shutil.copytree(hub_folder, folder)
    breakage(folder)
    with pytest.raises(SystemExit) as exit_info:
        load_push_module().main([str(folder), "--repo_id", "org/x"])  # not a dry run: it must stop before the network
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err
    figures = json.loads(captured.out.strip().splitlines()[-1])
    assert figures["ok"] is False and any(message in line for line in figures["missing"])


def test_upload_sends_exactly_the_listed_files_with_only_the_network_calls_mocked(hub_folder, tmp_path, monkeypatch, capsys):
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = (repo_id, kwargs)
        return huggingface_hub.hf_api.RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, **kwargs):
        calls["upload_folder"] = kwargs
        return huggingface_hub.hf_api.CommitInfo(
            commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/{COMMIT}", commit_message=kwargs["commit_message"],
            commit_description="", oid=COMMIT,
        )  # fmt: skip

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    folder = tmp_path / "weird [name]"  # glob characters in the path and a file name must not widen the upload
    shutil.copytree(hub_folder, folder)
    (folder / "notes[1].txt").write_text("kept")
    (folder / "scheduler.pt").write_bytes(b"pickled")
    figures = load_push_module().main([str(folder), "--repo_id", "org/vlmixer-base", "--private", "--commit_message",
                                       "Release", "--token", "hf_test", "--output", str(tmp_path / "out.json")])  # fmt: skip
    repo_id, create_kwargs = calls["create_repo"]
    assert repo_id == "org/vlmixer-base" and create_kwargs["private"] is True and create_kwargs["exist_ok"] is True
    assert create_kwargs["repo_type"] == "model" and "space_sdk" not in create_kwargs
    upload = calls["upload_folder"]
    assert upload["repo_id"] == "org/vlmixer-base" and upload["commit_message"] == "Release"
    assert Path(upload["folder_path"]) == folder.resolve()
    listed = sorted(f["path"] for f in figures["files"])
    on_disk = sorted(p.name for p in folder.iterdir())
    selected = sorted(filter_repo_objects(on_disk, allow_patterns=upload["allow_patterns"]))
    assert selected == listed and "notes[1].txt" in listed and "scheduler.pt" not in listed
    assert figures["commit_url"].endswith(COMMIT) and figures["commit_oid"] == COMMIT and figures["dry_run"] is False
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == figures
    assert json.loads((tmp_path / "out.json").read_text()) == figures
    assert "hf_test" not in json.dumps(figures)


# ---------------------------------------------------------------------------------------------- fine-tuned folders


@pytest.fixture
def finetuned_folder(vqa_hub_folder, tmp_path) -> Path:
    """A fine-tuning script's output: a VLMixer head model with its processor, the Trainer's eval_results.json (its
    own metrics) and a card written with ModelCard, as trainer.create_model_card() writes one."""
    folder = tmp_path / "vlmixer-vqa"
    shutil.copytree(vqa_hub_folder, folder)
    (folder / "eval_results.json").write_text(json.dumps({"eval_vqa_accuracy": 0.34, "epoch": 1.0}))
    result = EvalResult(task_type="visual-question-answering", dataset_type="imagefolder", dataset_name="scenes",
                        dataset_split="test", metric_type="accuracy", metric_name="VQA accuracy", metric_value=0.34)  # fmt: skip
    data = cards.card_data("vlmixer-vqa", "visual-question-answering", [result], base_model="org/vlmixer-base")
    cards.render(data, "# vlmixer-vqa\n\nFine-tuned with the Trainer.\n").save(folder / "README.md")
    return folder


def test_a_finetuned_folder_is_accepted_and_listed(finetuned_folder, no_network):
    config = json.loads((finetuned_folder / "config.json").read_text())
    assert config["architectures"] == ["VLMixerForQuestionAnswering"]  # a task head, not the pre-training model
    figures = load_push_module().main([str(finetuned_folder), "--repo_id", "org/vlmixer-vqa", "--dry-run"])
    assert figures["ok"] is True and figures["repo_type"] == "model"
    listed = {f["path"] for f in figures["files"]}
    assert {"README.md", "eval_results.json", "config.json", "model.safetensors", "processor_config.json"} <= listed
    card = ModelCard.load(finetuned_folder / "README.md")
    assert [(r.task_type, r.metric_value) for r in card.data.eval_results] == [("visual-question-answering", 0.34)]


def test_a_finetuned_folder_without_a_card_is_refused(finetuned_folder, no_network, capsys):
    (finetuned_folder / "README.md").unlink()
    with pytest.raises(SystemExit):
        load_push_module().main([str(finetuned_folder), "--repo_id", "org/vlmixer-vqa", "--dry-run"])
    assert "README.md (the model card" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- the Space


SPACE = REPO_ROOT / "space"


def test_space_folder_has_the_space_header_requirements_and_app():
    data = SpaceCard.load(SPACE / "README.md").data
    assert data.sdk == "gradio" and (SPACE / data.app_file).is_file() and data.license == "apache-2.0"
    assert data.sdk_version and data.title and len(data.models) == 1
    app = (SPACE / data.app_file).read_text()
    assert "from vlmixer.scripts.app import main" in app  # runs the package's app, no copy of its UI


def test_space_requirements_cover_the_package_dependencies():
    import re
    import tomllib

    def name(requirement: str) -> str:
        return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")

    lines = [line for line in (SPACE / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {name(d) for d in dependencies} <= {name(line) for line in lines}


def test_space_dry_run_lists_the_space_and_the_package_offline(no_network, tmp_path):
    figures = load_push_module().main(["--space", "--repo_id", "org/vlmixer-demo", "--dry-run", "--output",
                                       str(tmp_path / "plan.json")])  # fmt: skip
    listed = {f["path"] for f in figures["files"]}
    assert figures["ok"] is True and figures["repo_type"] == "space" and figures["folder"] == str(SPACE)
    assert {"README.md", "requirements.txt", "app.py", "vlmixer/__init__.py", "vlmixer/scripts/app.py",
            "vlmixer/processing/visualize.py", "vlmixer/modeling_vlmixer/pipeline_vlmixer.py"} <= listed  # fmt: skip
    assert not any("__pycache__" in path or path.startswith("tests/") for path in listed)
    assert json.loads((tmp_path / "plan.json").read_text()) == figures


def test_space_dry_run_from_the_command_line(tmp_path):
    result = run_push("--space", "--repo_id", "org/vlmixer-demo", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would upload app.py" in result.stdout and "huggingface.co/spaces/org/vlmixer-demo" in result.stdout


def test_the_staged_space_names_the_model_and_imports_its_own_copy_of_the_app(tmp_path):
    """In the staged Space the app imports from the copy uploaded beside it, not from this checkout."""
    staged = load_push_module().staged_space(SPACE, tmp_path, "org/vlmixer-small")
    assert SpaceCard.load(staged / "README.md").data.models == ["org/vlmixer-small"]
    assert SpaceCard.load(SPACE / "README.md").data.models != ["org/vlmixer-small"]  # the folder itself is unchanged
    code = "import app, vlmixer.scripts.app as ui; print(app.model_id()); print(ui.__file__)"
    result = subprocess.run([sys.executable, "-c", code], cwd=staged, capture_output=True, text=True, timeout=120,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    model, app_file = result.stdout.split()[-2:]
    assert model == "org/vlmixer-small" and Path(app_file).resolve() == (staged / "vlmixer/scripts/app.py").resolve()


def test_a_space_upload_without_the_model_it_runs_is_refused():
    result = run_push("--space", "--repo_id", "org/vlmixer-demo")
    assert result.returncode == 2 and "--model_id" in result.stderr


def test_a_space_without_requirements_is_refused(tmp_path, no_network, capsys):
    space = tmp_path / "space"
    shutil.copytree(SPACE, space)
    (space / "requirements.txt").unlink()
    with pytest.raises(SystemExit) as exit_info:
        load_push_module().main([str(space), "--space", "--repo_id", "org/x", "--model_id", "org/m"])
    assert exit_info.value.code == 2 and "requirements.txt" in capsys.readouterr().err


def test_space_upload_creates_a_gradio_space_with_only_the_network_calls_mocked(monkeypatch):
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = kwargs
        return huggingface_hub.hf_api.RepoUrl(f"https://huggingface.co/spaces/{repo_id}")

    def upload_folder(self, **kwargs):
        calls["upload_folder"] = kwargs
        calls["on_disk"] = [p.relative_to(kwargs["folder_path"]).as_posix() for p in Path(kwargs["folder_path"]).rglob("*")]
        return huggingface_hub.hf_api.CommitInfo(commit_url=f"https://huggingface.co/spaces/org/x/commit/{COMMIT}",
                                                 commit_message="", commit_description="", oid=COMMIT)  # fmt: skip

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    figures = load_push_module().main(["--space", "--repo_id", "org/x", "--model_id", "org/vlmixer-small", "--token", "t"])
    assert calls["create_repo"]["repo_type"] == "space" and calls["create_repo"]["space_sdk"] == "gradio"
    assert calls["upload_folder"]["repo_type"] == "space"
    selected = sorted(filter_repo_objects(calls["on_disk"], allow_patterns=calls["upload_folder"]["allow_patterns"]))
    assert selected == sorted(f["path"] for f in figures["files"]) and figures["commit_oid"] == COMMIT
