"""COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D) through pycocoevalcap, as an `evaluate` metric."""

import os
import re
import shutil
import subprocess

import datasets
import evaluate
from pycocoevalcap.bleu import bleu as bleu_module
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge


_DESCRIPTION = """
The COCO caption evaluation (pycocoevalcap): BLEU-1 to BLEU-4, ROUGE-L and CIDEr-D in pure Python; METEOR 1.5
through Java when `java` and pycocoevalcap's meteor-1.5.jar are present (otherwise left out, with a note).
Captions are lower-cased and tokenised first, with the Stanford PTB tokenizer as the COCO evaluation does (Java)
or, without Java, a pure-Python approximation of it; punctuation is dropped. CIDEr-D takes its document
frequencies from the references of the evaluated set: it needs more than one image to be meaningful. Scores are
pycocoevalcap's: BLEU, METEOR and ROUGE-L in [0, 1], CIDEr-D in [0, 10] (papers often print them times 100).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): one generated caption per image.
    references (`list` of `list` of `str`): the reference captions of each image (at least one).
    tokenizer (`str`, default `"auto"`): `"ptb"` (Java), `"simple"` (pure Python), or `"auto"` (PTB when Java runs).
    meteor (`str` or `bool`, default `"auto"`): compute METEOR when Java and its jar are present (`"auto"`), always
        (`True`: an error without Java) or never (`False`).
Returns:
    `Bleu_1` .. `Bleu_4`, `ROUGE_L`, `CIDEr` and, when computed, `METEOR` (floats); `tokenizer` used; `images`;
    `notes` (`list` of `str`): what was left out and why.
Examples:
    >>> captions = evaluate.load("processing/metrics/caption_metrics")
    >>> captions.compute(predictions=["a bag and two sneakers."], references=[["a bag and two sneakers", "two shoes"]],
    ...                  meteor=False)["Bleu_1"]
    0.9999999996000004
"""

_CITATION = """
@article{chen2015microsoft,
  title={Microsoft COCO Captions: Data Collection and Evaluation Server},
  author={Chen, Xinlei and Fang, Hao and Lin, Tsung-Yi and Vedantam, Ramakrishna and Gupta, Saurabh and Dollar, Piotr and Zitnick, C. Lawrence},
  journal={arXiv preprint arXiv:1504.00325},
  year={2015}
}
@inproceedings{vedantam2015cider,
  title={CIDEr: Consensus-based Image Description Evaluation},
  author={Vedantam, Ramakrishna and Zitnick, C. Lawrence and Parikh, Devi},
  booktitle={CVPR},
  year={2015}
}
"""

PACKAGE_DIR = os.path.dirname(
    os.path.dirname(os.path.abspath(bleu_module.__file__))
)  # a namespace package: no __file__
PTB_JAR = os.path.join(PACKAGE_DIR, "tokenizer", "stanford-corenlp-3.4.1.jar")
METEOR_JAR = os.path.join(PACKAGE_DIR, "meteor", "meteor-1.5.jar")
# The tokens the COCO evaluation drops after PTB tokenisation.
PUNCTUATION = {
    "''",
    "'",
    "``",
    "`",
    "-lrb-",
    "-rrb-",
    "-lcb-",
    "-rcb-",
    ".",
    "?",
    "!",
    ",",
    ":",
    "-",
    "--",
    "...",
    ";",
}
SIMPLE_TOKEN = re.compile(r"n't|'[a-z]+|[a-z0-9]+(?:-[a-z0-9]+)*|[^\sa-z0-9]")


def java_runs() -> bool:
    """Whether a `java` executable is on the PATH and starts."""
    if shutil.which("java") is None:
        return False
    try:
        return subprocess.run(["java", "-version"], capture_output=True, timeout=60, check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def ptb_tokenize(captions: list[str]) -> list[str]:
    """Lower-cased PTB tokens of each caption, punctuation dropped, joined by spaces (the COCO evaluation's step;
    run through stdin so that nothing is written into the installed package)."""
    text = "\n".join(caption.replace("\n", " ").replace("\r", " ") for caption in captions)
    result = subprocess.run(["java", "-cp", PTB_JAR, "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines",
                             "-lowerCase"], input=text.encode(), capture_output=True, timeout=600, check=False)  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"The PTB tokenizer failed: {result.stderr.decode()[-1000:]}")
    lines = result.stdout.decode().split("\n")[: len(captions)]
    if len(lines) != len(captions):
        raise RuntimeError(f"The PTB tokenizer returned {len(lines)} lines for {len(captions)} captions.")
    return [" ".join(token for token in line.split() if token not in PUNCTUATION) for line in lines]


def simple_tokenize(captions: list[str]) -> list[str]:
    """A pure-Python approximation of `ptb_tokenize`: lower case, words (hyphens inside kept; "n't", "'s", "'re" ...
    split off as PTB does), punctuation dropped."""
    tokens = (SIMPLE_TOKEN.findall(caption.lower().replace("n't", " n't")) for caption in captions)
    return [" ".join(t for t in words if t not in PUNCTUATION and re.search(r"[a-z0-9]", t)) for words in tokens]


def meteor_scores(references: dict, hypotheses: dict) -> float:
    """METEOR 1.5 over all images (one Java process, closed afterwards)."""
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    try:
        score, _ = scorer.compute_score(references, hypotheses)
    finally:
        scorer.meteor_p.stdin.close()
        scorer.meteor_p.kill()
        scorer.meteor_p.wait()
    return float(score)


def caption_scores(predictions: list[str], references: list[list[str]], tokenizer: str = "auto",
                   meteor="auto") -> dict:  # fmt: skip
    """The COCO caption metrics of `predictions` against `references` (see the module's description)."""
    if len(predictions) != len(references):
        raise ValueError(f"Got {len(predictions)} predictions but {len(references)} reference lists.")
    if not predictions:
        raise ValueError("No captions to score.")
    if any(len(refs) == 0 for refs in references):
        raise ValueError("Every prediction needs at least one reference caption.")
    if tokenizer not in ("auto", "ptb", "simple") or meteor not in ("auto", True, False):
        raise ValueError(
            f"tokenizer must be 'auto', 'ptb' or 'simple' and meteor 'auto', True or False; got {tokenizer!r}, {meteor!r}."
        )
    notes, has_java = [], java_runs()
    if tokenizer == "auto":
        tokenizer = "ptb" if has_java else "simple"
        if not has_java:
            notes.append("Java not found: captions tokenised by the pure-Python approximation of the PTB tokenizer.")
    elif tokenizer == "ptb" and not has_java:
        raise RuntimeError("tokenizer='ptb' needs Java (`java` on the PATH).")
    tokenize = ptb_tokenize if tokenizer == "ptb" else simple_tokenize
    flat = tokenize([*predictions, *(ref for refs in references for ref in refs)])
    hypotheses = {i: [flat[i]] for i in range(len(predictions))}
    cursor, gts = len(predictions), {}
    for i, refs in enumerate(references):
        gts[i], cursor = flat[cursor : cursor + len(refs)], cursor + len(refs)
    bleu, _ = Bleu(4).compute_score(gts, hypotheses, verbose=0)
    results = {f"Bleu_{n + 1}": float(value) for n, value in enumerate(bleu)}
    results["ROUGE_L"] = float(Rouge().compute_score(gts, hypotheses)[0])
    results["CIDEr"] = float(Cider().compute_score(gts, hypotheses)[0])
    if len(predictions) < 2:
        notes.append("CIDEr-D is 0 for a single image: its document frequencies come from the evaluated set.")
    meteor_ready = has_java and os.path.isfile(METEOR_JAR)
    if meteor is True and not meteor_ready:
        raise RuntimeError(f"METEOR needs Java and {METEOR_JAR}.")
    if meteor and meteor_ready:
        results["METEOR"] = meteor_scores(gts, hypotheses)
    elif meteor == "auto":
        notes.append("METEOR omitted: it needs Java and pycocoevalcap's meteor-1.5.jar.")
    return {**results, "tokenizer": tokenizer, "images": len(predictions), "notes": notes}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CaptionMetrics(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
            codebase_urls=["https://github.com/salaniz/pycocoevalcap"],
            reference_urls=["https://cocodataset.org/#captions-eval"],
        )

    def _compute(self, predictions, references, tokenizer="auto", meteor="auto"):
        return caption_scores(predictions, references, tokenizer, meteor)
