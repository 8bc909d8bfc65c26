"""Uploads a saved VLMixer folder to the Hugging Face Hub as a model repository, or the Gradio app as a Space.

The folder must be complete, as `scripts/demo.py`, `scripts/pretrain.py` or a fine-tuning script (with the Trainer's
card) write it: `config.json` and the weights (`model.safetensors`, or an index and its shards), the processor
(`processor_config.json`, `tokenizer.json`, `tokenizer_config.json`; `concepts.json` and the gallery `gallery.json` +
`gallery.safetensors` when present), every code file that `auto_map` and `custom_pipelines` name (plus the files they
import with single-dot relative imports), and the model card `README.md`: its metadata parses with
`huggingface_hub.ModelCard.load`, model_card.md's $placeholders are all filled, and its `model-index` equals the
folder's zero-shot `eval_results.json` when it has one. A folder that lacks any of them is refused before anything is
uploaded, with the list of what is missing.

Uploaded: every file of the folder except hidden files, caches, pickles (*.bin, *.pt, *.pth, *.pkl, *.ckpt: the
weights travel as safetensors) and training state (checkpoint-*/, runs/); those are listed as skipped.

  python scripts/push_to_hub.py vlmixer-small --repo_id org/vlmixer-small --dry-run   # lists files and sizes, no network
  python scripts/push_to_hub.py vlmixer-small --repo_id org/vlmixer-small --private --commit_message "First upload"
  python scripts/push_to_hub.py --space --repo_id org/vlmixer-demo --model_id org/vlmixer-small --dry-run

--space uploads the Space folder (default: the repository's space/: README.md with the Space's YAML header,
requirements.txt, app.py) as a Gradio Space, staged with a copy of this package beside app.py (the Space imports
vlmixer.scripts.app from it); --model_id names the model repository the Space runs (its card's `models:`), and an
upload needs it (space/README.md names a placeholder).

--add_pipelines uploads a staged copy of the folder with the VLMixer pipelines added (pipeline_vlmixer.py and the
`custom_pipelines` entry of config.json: `pipeline("zero-shot-image-classification", model=repo_id,
trust_remote_code=True)`); the folder itself is not changed. The token comes from --token, $HF_TOKEN or
`hf auth login`. The repository is created when missing (--private applies then; an existing repository keeps its
visibility). The last line on stdout is one JSON object (also written to --output).
"""

import argparse
import glob
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent

from vlmixer.scripts import cards  # noqa: E402
from vlmixer.scripts.figures import report  # noqa: E402


REPO = SCRIPTS.parent
SPACE = REPO / "space"
SPACE_FILES = ("README.md", "requirements.txt")  # besides the app file its card names
PROCESSOR_FILES = ("processor_config.json", "tokenizer.json", "tokenizer_config.json")
GALLERY_FILES = ("gallery.json", "gallery.safetensors")
SKIPPED_PATTERNS = (
    (".*", "hidden"), ("*/.*", "hidden"), ("__pycache__/*", "cache"), ("*/__pycache__/*", "cache"), ("*.pyc", "cache"),
    ("*.bin", "pickle"), ("*.pt", "pickle"), ("*.pth", "pickle"), ("*.pkl", "pickle"), ("*.pickle", "pickle"),
    ("*.ckpt", "pickle"), ("checkpoint-*/*", "training state"), ("runs/*", "training logs"),
)  # fmt: skip
RELATIVE_IMPORT = re.compile(r"^\s*(?:from\s+\.(\w+)\s+import|import\s+\.(\w+))", re.MULTILINE)


class IncompleteFolder(ValueError):
    """The folder lacks files a Hub user needs; `missing` lists them."""

    def __init__(self, folder: Path, missing: list[str]):
        self.missing = missing
        super().__init__(f"{folder} is not ready for the Hub:\n  - " + "\n  - ".join(missing))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", default=None,
                        help="the saved VLMixer folder (model, processor, gallery, code files, README.md); with "
                        "--space the Space folder, by default the repository's space/")  # fmt: skip
    parser.add_argument("--repo_id", required=True, help="the Hub repository, `user/name` or `org/name`")
    parser.add_argument("--private", action="store_true", help="create the repository as private (when it is created)")
    parser.add_argument("--commit_message", default=None, help="defaults to 'Upload <folder name> (VLMixer)'")
    parser.add_argument("--revision", default=None, help="the branch to commit to (default: main)")
    parser.add_argument("--token", default=None, help="a Hub token with write access (default: $HF_TOKEN or the saved login)")
    parser.add_argument("--add_pipelines", action="store_true",
                        help="upload a staged copy with the VLMixer pipelines added (the folder is left as it is)")  # fmt: skip
    parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                        help="check the folder and list the files that would be uploaded, with their sizes; no network")  # fmt: skip
    parser.add_argument("--space", action="store_true",
                        help="upload the folder as a Gradio Space (README.md with the Space YAML header, requirements.txt, "
                        "the app file) staged with this package's code")  # fmt: skip
    parser.add_argument("--model_id", default=None,
                        help="with --space: the model repository the Space runs (written into its card's `models:`)")
    parser.add_argument("--output", default=None, help="also write the final JSON object to this file")
    args = parser.parse_args(argv)
    if args.folder is None and not args.space:
        parser.error("the folder is required (only --space has a default, the repository's space/)")
    if args.space and not args.dry_run and not args.model_id:
        parser.error("a Space upload needs --model_id, the model repository the Space runs")
    args.folder = args.folder or str(SPACE)
    return args


# ---------------------------------------------------------------------------------------------- checking


def read_json(path: Path, missing: list[str]) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        missing.append(f"{path.name} (required)")
    except json.JSONDecodeError as error:
        missing.append(f"{path.name} is not valid JSON ({error})")
    return {}


def code_references(*configs: dict) -> set[str]:
    """The `.py` files that `auto_map` entries ("file.Class", or tokenizer [slow, fast] pairs) and `custom_pipelines`
    ("impl": "file.Class") of the given JSON configs name."""
    references = []
    for config in configs:
        for value in (config.get("auto_map") or {}).values():
            references += value if isinstance(value, (list, tuple)) else [value]
        references += [task.get("impl") for task in (config.get("custom_pipelines") or {}).values()]
    # "repo--file.Class" points into another repository: nothing to check here
    return {ref.split(".")[0] + ".py" for ref in references if isinstance(ref, str) and "--" not in ref and "." in ref}


def with_relative_imports(folder: Path, code_files: set[str], missing: list[str]) -> set[str]:
    """`code_files` and, recursively, the files they import with single-dot relative imports (which must be there)."""
    needed, queue = set(), sorted(code_files)
    while queue:
        name = queue.pop()
        if name in needed:
            continue
        needed.add(name)
        path = folder / name
        if not path.is_file():
            missing.append(f"{name} (code named in auto_map/custom_pipelines or imported by another code file)")
            continue
        for first, second in RELATIVE_IMPORT.findall(path.read_text()):
            queue.append((first or second) + ".py")
    return needed


def check_folder(folder: Path) -> list[str]:
    """Everything a Hub user needs that `folder` lacks (empty when it is complete)."""
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    missing = []
    config = read_json(folder / "config.json", missing)
    if (folder / "model.safetensors.index.json").exists():
        index = read_json(folder / "model.safetensors.index.json", missing)
        for shard in sorted(set((index.get("weight_map") or {}).values())):
            if not (folder / shard).is_file():
                missing.append(f"{shard} (a shard named in model.safetensors.index.json)")
    elif not (folder / "model.safetensors").is_file():
        missing.append("model.safetensors (required: the weights, as safetensors)")
    processor_configs = [read_json(folder / name, missing) for name in PROCESSOR_FILES if name.endswith("config.json")]
    if not (folder / "tokenizer.json").is_file():
        missing.append("tokenizer.json (required: the processor's tokenizer)")
    present = [name for name in GALLERY_FILES if (folder / name).is_file()]
    if len(present) == 1:
        missing.append(f"{(set(GALLERY_FILES) - set(present)).pop()} (the gallery needs both {' and '.join(GALLERY_FILES)})")
    with_relative_imports(folder, code_references(config, *processor_configs), missing)
    missing += card_problems(folder)
    return missing


def card_problems(folder: Path) -> list[str]:
    """What is wrong with the folder's model card: missing, model_card.md's placeholders left, metadata that does not
    parse, a model-index that disagrees with eval_results.json."""
    card = folder / "README.md"
    if not card.is_file():
        return ["README.md (the model card: scripts/demo.py, pretrain.py and the Trainer write one)"]
    text = card.read_text()
    left = sorted(name for name in cards.template_placeholders() if re.search(rf"\$({name}\b|\{{{name}\}})", text))
    if left:
        return [f"README.md still holds unfilled placeholders of model_card.md: {', '.join('$' + n for n in left)}"]
    return cards.card_problems(folder)


def check_space(folder: Path) -> list[str]:
    """Everything a Gradio Space needs that `folder` lacks: its files and a card whose YAML names the sdk and app."""
    from huggingface_hub import SpaceCard

    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    missing = [f"{name} (required in a Space)" for name in SPACE_FILES if not (folder / name).is_file()]
    if missing:
        return missing
    data = SpaceCard.load(folder / "README.md").data
    missing += [f"README.md's YAML header has no `{key}`" for key in ("sdk", "app_file") if not data.get(key)]
    if data.get("app_file") and not (folder / data.app_file).is_file():
        missing.append(f"{data.app_file} (the app file README.md names)")
    return missing


def package_folders() -> dict[str, Path]:
    """{package path in the Space: source folder} from pyproject.toml's package-dir (the folders are installed under
    another name than they have here, so a plain copy of the repository would not import)."""
    import tomllib

    mapping = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return {package.replace(".", "/"): REPO / source for package, source in sorted(mapping.items())}


def staged_space(folder: Path, staging: Path, model_id: str | None) -> Path:
    """A copy of the Space folder in `staging` with this package's code beside the app and, when given, `model_id`
    as the model its card names."""
    from huggingface_hub import SpaceCard

    copy = staging / folder.name
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    for package, source in package_folders().items():  # parents sort first
        shutil.copytree(source, copy / package, ignore=shutil.ignore_patterns("__pycache__", ".*"), dirs_exist_ok=True)
    if model_id:
        card = SpaceCard.load(copy / "README.md")
        card.data.models = [model_id]
        card.save(copy / "README.md")
    return copy


# ---------------------------------------------------------------------------------------------- listing


def skip_reason(relative: str) -> str | None:
    from fnmatch import fnmatch

    return next((why for pattern, why in SKIPPED_PATTERNS if fnmatch(relative, pattern)), None)


def upload_plan(folder: Path) -> tuple[list[dict], list[dict]]:
    """(files to upload, files skipped) as [{"path", "bytes"}] / [{"path", "reason"}], sorted by path."""
    files, skipped = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        reason = skip_reason(relative)
        if reason is None:
            files.append({"path": relative, "bytes": path.stat().st_size})
        else:
            skipped.append({"path": relative, "reason": reason})
    return files, skipped


def staged_with_pipelines(folder: Path, staging: Path) -> tuple[Path, dict]:
    """A copy of `folder` in `staging` with the VLMixer pipelines added (pipeline_vlmixer.py, custom_pipelines), and
    the pipelines it did not have before; folders saved by this version have them all and need no copy."""
    from vlmixer.modeling_vlmixer.pipeline_vlmixer import save_pipelines

    present = json.loads((folder / "config.json").read_text()).get("custom_pipelines") or {}
    copy = staging / folder.name
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    return copy, {task: entry for task, entry in save_pipelines(copy).items() if task not in present}


def human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024


def prepared(args, staging: Path) -> tuple[Path, dict, list[str]]:
    """(the folder to upload: the given one or a staged copy, the pipelines added, what it lacks)."""
    folder = Path(args.folder).resolve()
    if args.space:
        missing = check_space(folder)
        return (folder if missing else staged_space(folder, staging, args.model_id)), {}, missing
    added_pipelines = {}
    if args.add_pipelines and folder.is_dir() and (folder / "config.json").is_file():
        folder, added_pipelines = staged_with_pipelines(folder, staging)
    return folder, added_pipelines, check_folder(folder)


def upload(args, folder: Path, figures: dict) -> dict:
    """Creates the repository when missing and commits exactly the listed files; adds the commit to `figures`."""
    from huggingface_hub import HfApi

    api = HfApi(token=args.token)
    sdk = {"space_sdk": "gradio"} if args.space else {}
    repo_url = api.create_repo(args.repo_id, private=args.private, repo_type=figures["repo_type"], exist_ok=True, **sdk)
    commit = api.upload_folder(
        repo_id=args.repo_id,
        folder_path=str(folder),
        repo_type=figures["repo_type"],
        revision=args.revision,
        commit_message=figures["commit_message"],
        allow_patterns=[glob.escape(entry["path"]) for entry in figures["files"]],  # exactly the listed files
    )
    figures["repo_url"] = str(repo_url)
    figures["commit_url"] = getattr(commit, "commit_url", None) or str(commit)
    figures["commit_oid"] = getattr(commit, "oid", None)
    return figures


def main(argv=None) -> dict:
    args = parse_args(argv)
    repo_type = "space" if args.space else "model"
    with tempfile.TemporaryDirectory(prefix="vlmixer-push-") as staging:
        folder, added_pipelines, missing = prepared(args, Path(staging))
        if missing:
            error = IncompleteFolder(Path(args.folder), missing)
            print(f"error: {error}", file=sys.stderr)
            report({"repo_id": args.repo_id, "folder": args.folder, "ok": False, "missing": missing}, args.output)
            sys.exit(2)
        files, skipped = upload_plan(folder)
        figures = {
            "repo_id": args.repo_id,
            "repo_type": repo_type,
            "folder": args.folder,
            "ok": True,
            "dry_run": args.dry_run,
            "private": args.private,
            "revision": args.revision,
            "commit_message": args.commit_message or f"Upload {Path(args.folder).resolve().name} (VLMixer)",
            "files": files,
            "total_bytes": sum(f["bytes"] for f in files),
            "skipped": skipped,
            "added_pipelines": sorted(added_pipelines),
        }
        for entry in files:
            print(f"{'would upload' if args.dry_run else 'uploading'} {entry['path']:<40} {human(entry['bytes']):>10}")
        for entry in skipped:
            print(f"skipping {entry['path']} ({entry['reason']})")
        url = f"https://huggingface.co/{'spaces/' if args.space else ''}{args.repo_id}"
        print(f"{len(files)} files, {human(figures['total_bytes'])} -> {url}")
        return report(figures if args.dry_run else upload(args, folder, figures), args.output)


if __name__ == "__main__":
    main()
