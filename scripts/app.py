"""The live VLMixer demo as a Gradio app (ready to be a Hugging Face Space: Hub widgets cannot run custom code).

Zero-shot image classification with the package's `zero-shot-image-classification` pipeline
(modeling_vlmixer/pipeline_vlmixer.py, built for the model object by its `pipeline_for`, so transformers' own
`zero-shot-image-classification` stays CLIP's in the process): the image enters a prompt as one visual token
("a <image>.") and each candidate label as the same prompt with its words ("a trouser."); the scores are the softmax,
at the model's learnt contrastive temperature, of the cosine similarities of these sentence embeddings, as
scripts/evaluate_zero_shot.py classifies. A label the concept vocabulary knows is embedded with all its surface forms
averaged ("trouser": trousers, jeans, pants...); any other label is free text, embedded as written.

Cross-modal CutMix: a sentence you type, drawn with its grounded words replaced by patches of the model's gallery
(processing.visualize.render_mixed_sentences, the picture of the paper's figure 1).

vlmixer-small knows the 10 Fashion-MNIST clothing classes only (its gallery holds 28x28 Fashion-MNIST patches); the
scikit-image photos among the examples show what it does with images unlike any it has seen.

Examples: Fashion-MNIST test images (never seen in training) when Debian's dataset-fashion-mnist is installed, and
scikit-image's photos when scikit-image is. Nothing is fetched from the network when --model is a local folder:
Gradio's analytics and the Hub's telemetry are off, and the model loads offline.

    python scripts/app.py                               # http://127.0.0.1:7860, model from ./vlmixer-small
    python scripts/app.py --model user/vlmixer-small --trust_remote_code --port 8000
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent

REPO = SCRIPTS.parent
DEFAULT_LABELS = "t-shirt, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle boot"
TASK = "zero-shot-image-classification"
DEFAULT_SENTENCE = "She wore a summer dress with leather sandals and a small bag."
FASHION_MNIST_EXAMPLES = {
    2: "trouser",
    18: "bag",
    0: "ankle boot",
    13: "dress",
    8: "sandal",
    1: "pullover",
}  # test index
SKIMAGE_EXAMPLES = ("chelsea", "coffee", "rocket")
OFFLINE_ENVIRONMENT = {
    "GRADIO_ANALYTICS_ENABLED": "False",  # no usage reports, no version check
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vlmixer-small",
                        help="a saved VLMixer pre-training folder (model + processor + gallery; looked up in the "
                        "current folder, then in the repository) or a Hub id (downloaded once; needs the network)")  # fmt: skip
    parser.add_argument("--trust_remote_code", action="store_true",
                        help="load the model and processor from the code files shipped with the checkpoint, as a "
                        "Space without this package installed would (the picture still needs processing/visualize.py)")  # fmt: skip
    parser.add_argument("--prompt", default=None,
                        help="the classification prompt, {} is the label (default: the one the checkpoint's "
                        "eval_results.json records, as `make demo` writes it, else 'a photo of a {}.')")  # fmt: skip
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (default $GRADIO_SERVER_NAME, which Spaces set to 0.0.0.0, else "
                        "127.0.0.1)")  # fmt: skip
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                        help="port to listen on (default $GRADIO_SERVER_PORT, else 7860)")  # fmt: skip
    parser.add_argument("--share", action="store_true",
                        help="also open a public *.gradio.live link (needs the network; off by default)")  # fmt: skip
    parser.add_argument("--fashion_mnist", default="/usr/share/datasets/fashion-mnist",
                        help="folder of the Fashion-MNIST idx files, for the example images")  # fmt: skip
    parser.add_argument("--examples_dir", default=str(Path(tempfile.gettempdir()) / "vlmixer-app-examples"),
                        help="where the example images are written as PNG files")  # fmt: skip
    return parser.parse_args(argv)


def resolve_model(name: str) -> tuple[str, bool]:
    """(what to load, whether it is a local folder): the name as a folder, then under the repository, else a Hub id."""
    for candidate in (Path(name), REPO / name):
        if candidate.is_dir():
            return str(candidate), True
    return name, False


# ---------------------------------------------------------------------------------------------- scoring


def parse_labels(text: str) -> list[str]:
    """Comma-separated candidate labels, stripped, empty ones and repeats dropped, order kept."""
    return list(dict.fromkeys(label.strip() for label in (text or "").split(",") if label.strip()))


def zero_shot_classifier(model, processor):
    """The package's `zero-shot-image-classification` pipeline (modeling_vlmixer/pipeline_vlmixer.py) for this model
    and processor."""
    from vlmixer.modeling_vlmixer.pipeline_vlmixer import pipeline_for, register_pipelines

    # An older folder's config may not name the task; the entry goes into this model's own config only, so that
    # `transformers.pipeline("zero-shot-image-classification", ...)` stays CLIP's (and every other model's) in-process.
    register_pipelines(model)
    return pipeline_for(TASK, model, processor=processor)


def scores_for_label(results: list[dict]) -> dict[str, float]:
    """The pipeline's [{"score", "label"}, ...] as gr.Label's {label: score}."""
    return {result["label"]: result["score"] for result in results}


# ---------------------------------------------------------------------------------------------- examples


def write_examples(folder: Path, fashion_mnist: str) -> list[str]:
    """PNG files of the example images: Fashion-MNIST test images at their own 28x28 (the model's input as in the
    evaluation), then scikit-image photos; each source only when it is installed."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    try:
        from vlmixer.processing.sources import load_fashion_mnist

        images, _ = load_fashion_mnist("test", fashion_mnist)
        for index, name in FASHION_MNIST_EXAMPLES.items():
            path = folder / f"fashion-mnist-test-{index:05d}-{name.replace(' ', '-')}.png"
            if not path.exists():
                Image.fromarray(images[index]).save(path)
            paths.append(str(path))
    except (ImportError, FileNotFoundError) as error:
        print(f"no Fashion-MNIST examples: {error}", file=sys.stderr)
    try:
        import skimage.data

        for name in SKIMAGE_EXAMPLES:
            path = folder / f"scikit-image-{name}.png"
            if not path.exists():
                Image.fromarray(getattr(skimage.data, name)()).save(path)
            paths.append(str(path))
    except ImportError:
        print("no scikit-image examples: scikit-image is not installed", file=sys.stderr)
    return paths


# ---------------------------------------------------------------------------------------------- the app

# 28x28 images shown large and sharp, not as a stamp in the middle of the box
CSS = """
#image img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
#examples img { image-rendering: pixelated; }
"""
INTRODUCTION = """
# VLMixer: vision and language learnt without a single image-caption pair

[VLMixer](https://arxiv.org/abs/2206.08919) (Wang et al., ICML 2022) pre-trains one encoder on text-only sentences
whose grounded words are swapped for image patches of those concepts (**cross-modal CutMix**), the patches coming
from image-only data. This model (`{model}`) learnt from Fashion-MNIST training images and sentences about clothes:
it knows the 10 Fashion-MNIST classes. The example images are Fashion-MNIST *test* images it never saw, and a few
photos unlike anything it saw.
"""


def build_demo(classifier, processor, model_name: str, prompt: str, examples: list[str]):
    import gradio as gr

    from vlmixer.processing.visualize import render_mixed_sentences

    pictures = Path(tempfile.mkdtemp(prefix="vlmixer-app-cmc-"))

    def classify(image, labels_text, prompt_text):
        if image is None:
            raise gr.Error("Upload an image or pick one of the examples.")
        labels = parse_labels(labels_text)
        if not labels:
            raise gr.Error("Give at least one candidate label (comma-separated).")
        if (prompt_text or "").count("{}") != 1:
            raise gr.Error("The prompt must hold one {} where the label goes, e.g. 'a photo of a {}.'.")
        return scores_for_label(classifier(image, candidate_labels=labels, hypothesis_template=prompt_text))

    def mix(sentence, seed, ratio):
        if not (sentence or "").strip():
            raise gr.Error("Type a sentence.")
        handle, path = tempfile.mkstemp(suffix=".png", dir=pictures)
        os.close(handle)
        try:
            return render_mixed_sentences(processor, [sentence.strip()], path, seed=int(seed), cmc_ratio=float(ratio))
        finally:
            os.remove(path)

    with gr.Blocks(title="VLMixer: unpaired vision-language pre-training") as demo:
        gr.Markdown(INTRODUCTION.format(model=model_name))
        gr.Markdown("## Zero-shot image classification")
        with gr.Row(equal_height=False):
            with gr.Column():
                image = gr.Image(label="Image", type="pil", image_mode="RGB", height=280, sources=["upload", "clipboard"],
                                 elem_id="image")  # fmt: skip
                labels = gr.Textbox(label="Candidate labels (comma-separated; class names or any free text)",
                                    value=DEFAULT_LABELS, lines=2, elem_id="labels")  # fmt: skip
                prompt_box = gr.Textbox(label="Prompt ({} is the label; the image goes there as one visual token)",
                                        value=prompt, elem_id="prompt")  # fmt: skip
                classify_button = gr.Button("Classify", variant="primary", elem_id="classify")
            with gr.Column():
                scores = gr.Label(label="Zero-shot scores", num_top_classes=5, elem_id="scores")
                if examples:
                    gr.Examples(examples=[[path] for path in examples], inputs=[image], elem_id="examples",
                                label="Examples (click one): Fashion-MNIST test images, then photos",
                                examples_per_page=len(examples))  # fmt: skip
        classify_button.click(classify, inputs=[image, labels, prompt_box], outputs=scores, api_name="classify")

        gr.Markdown(
            "## Cross-modal CutMix\nType a sentence: each word the concept vocabulary grounds is replaced, with "
            "probability *ratio*, by a patch of its concept drawn from the model's gallery (framed in red, its concept "
            "below). The model learnt from such mixed sentences only."
        )
        with gr.Row():
            sentence = gr.Textbox(label="Sentence", value=DEFAULT_SENTENCE, scale=4, elem_id="sentence")
            seed = gr.Number(label="Seed", value=0, precision=0, minimum=0, scale=1, elem_id="seed")
            ratio = gr.Slider(
                label="CMC ratio", minimum=0.0, maximum=1.0, step=0.05, value=1.0, scale=2, elem_id="ratio"
            )
        mix_button = gr.Button("Mix", variant="primary", elem_id="mix")
        picture = gr.Image(value=mix(DEFAULT_SENTENCE, 0, 1.0), label="Mixed sentence", type="pil", format="png",
                           interactive=False, elem_id="picture")  # fmt: skip
        mix_button.click(mix, inputs=[sentence, seed, ratio], outputs=picture, api_name="mix")
        sentence.submit(mix, inputs=[sentence, seed, ratio], outputs=picture)
    return demo


def main(argv=None) -> None:
    args = parse_args(argv)
    for key, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    model_path, local = resolve_model(args.model)
    if local:
        os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers and huggingface_hub are imported
    from vlmixer.scripts.evaluate_zero_shot import load_model

    model, processor = load_model(model_path, args.trust_remote_code)
    if args.trust_remote_code:
        # load_model made this package unimportable so that the model and processor come from the checkpoint's own
        # code files; the app's helpers (pipeline, picture, examples) are the package's again from here on.
        for name in ("vlmixer.modeling_vlmixer", "vlmixer.processing"):
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    examples = write_examples(Path(args.examples_dir), args.fashion_mnist)
    if processor.vocabulary is None or processor.patch_gallery is None:
        sys.exit(
            f"{model_path} has no concept vocabulary or gallery: the app needs a VLMixer pre-training checkpoint."
        )
    classifier = zero_shot_classifier(model, processor)
    try:
        prompt = args.prompt or classifier.default_hypothesis_template  # the one the checkpoint records
    except ValueError as error:
        sys.exit(f"{error} Or pass --prompt to the app.")
    print(f"model {model_path} loaded as {type(model).__module__}.{type(model).__name__}", flush=True)
    demo = build_demo(classifier, processor, Path(model_path).name if local else model_path, prompt, examples)
    demo.queue(default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, share=args.share, allowed_paths=[args.examples_dir],
        show_error=True, css=CSS,
    )  # fmt: skip


if __name__ == "__main__":
    main()
