"""The package as a user installs it: the wheel builds without warnings, installs into a fresh virtual environment with
the `vlmixer-*` commands, and imports as `vlmixer.*` from a working folder that holds modules named like ours."""

import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest


REPO_ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
# the commands whose --help a user tries first: each imports torch and transformers (seconds each)
TRIED_COMMANDS = ("vlmixer-build-gallery", "vlmixer-pretrain", "vlmixer-evaluate", "vlmixer-finetune-vqa",
                  "vlmixer-push-to-hub")  # fmt: skip
SHADOWS = {  # a user's own modules with our folders' former top-level names: importing one fails the test
    "processing.py": "raise ImportError('the user\\'s processing.py was imported')\n",
    "modeling_vlmixer.py": "raise ImportError('the user\\'s modeling_vlmixer.py was imported')\n",
    "scripts.py": "raise ImportError('the user\\'s scripts.py was imported')\n",
}
IMPORTS = ("import vlmixer, vlmixer.processing, vlmixer.modeling_vlmixer, vlmixer.scripts.pretrain; "
           "from vlmixer.processing import VLMixerProcessor; from vlmixer.modeling_vlmixer import VLMixerModel; "
           "print(vlmixer.processing.__file__)")  # fmt: skip


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PIP_NO_INDEX": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[Path, str]:
    """The wheel built from this tree offline (no build isolation: the environment's setuptools), and pip's log."""
    folder = tmp_path_factory.mktemp("wheel")
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir",
                 str(folder), str(REPO_ROOT)], cwd=folder)  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    return next(folder.glob("vlmixer-*.whl")), built.stdout + built.stderr


@pytest.fixture(scope="module")
def fresh_venv(wheel, tmp_path_factory) -> Path:
    """A new virtual environment holding only the wheel; the dependencies (torch, transformers, ...) are borrowed
    from this environment's site-packages through a .pth line, so that nothing is downloaded."""
    venv = tmp_path_factory.mktemp("venv")
    created = run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    installed = run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                     str(wheel[0])])  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    (Path(site) / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


@pytest.fixture
def shadowing_folder(tmp_path) -> Path:
    for name, text in SHADOWS.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_wheel_builds_without_warnings(wheel):
    _, log = wheel
    assert "warning" not in log.lower(), log[-3000:]


def test_the_wheel_holds_every_folder_under_the_one_package_name(wheel):
    import zipfile

    names = zipfile.ZipFile(wheel[0]).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"vlmixer"}
    for module in ("vlmixer/modeling_vlmixer/modeling_vlmixer.py", "vlmixer/processing/processing_vlmixer.py",
                   "vlmixer/processing/data/coco80.json", "vlmixer/scripts/pretrain.py",
                   "vlmixer/processing/metrics/vqa_accuracy/vqa_accuracy.py", "vlmixer/scripts/model_card.md",
                   "vlmixer/processing/data/sense_model/adapter_model.safetensors",
                   "vlmixer/processing/data/sense_model/head.safetensors",
                   "vlmixer/scripts/data/sense_train_shapes.jsonl"):  # fmt: skip
        assert module in names


def test_the_installed_wheel_gives_every_console_command(fresh_venv):
    bin_dir = fresh_venv / "bin"
    assert sorted(path.name for path in bin_dir.glob("vlmixer-*")) == sorted(ENTRY_POINTS)
    for command in TRIED_COMMANDS:
        shown = run([str(bin_dir / command), "--help"], cwd=fresh_venv)
        assert shown.returncode == 0, f"{command}: {shown.stderr[-2000:]}"
        assert "usage:" in shown.stdout.lower(), shown.stdout[:500]


def test_the_installed_package_imports_from_a_folder_with_a_processing_module(fresh_venv, shadowing_folder):
    imported = run([str(fresh_venv / "bin" / "python"), "-c", IMPORTS], cwd=shadowing_folder)
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert Path(imported.stdout.strip()).is_relative_to(fresh_venv)


def test_the_development_install_imports_from_a_folder_with_a_processing_module(shadowing_folder):
    imported = run([sys.executable, "-c", IMPORTS], cwd=shadowing_folder)
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert Path(imported.stdout.strip()) == REPO_ROOT / "processing" / "__init__.py"
