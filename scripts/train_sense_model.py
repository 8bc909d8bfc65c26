"""
Train the sense model of the concept matcher (`processing/sense.py`): a LoRA adapter on all-MiniLM-L6-v2 and one
logistic unit that tell, for each word `ConceptVocabulary.find` matches by spelling, whether the sentence uses it as
the visual concept ("the bear crossed the river") or in another sense ("bear in mind", "a bear market").

Training data: JSON lines {"vocabulary": name, "text": sentence, "expected": [{"text": span, "concept": label}]}, in
which `expected` lists every span that names the visual concept (the labelling rules of tests/data/README.md). The
shipped sentences (`scripts/data/sense_train_*.jsonl`, 7,113 written by hand for this, none from the evaluation set in
tests/) cover COCO-80, Fashion-MNIST, digits, shapes and 73 words with common other senses (crane, seal, rose, ...).
The model trains on every spelling match, number words included, but is never asked about function words, number
words or numerals: `find`'s noun-phrase rule decides those (`ConceptVocabulary.is_function_form`).
Every spelling match is a training example (label 1 when expected, else 0). A share of the sentences is held out to
choose the decision threshold: the highest at which the whole matcher (rules, then the model) keeps `--min_recall`
(0.95) of the visual mentions of the held-out sentences.

    python scripts/train_sense_model.py                       # writes processing/data/sense_model/
    python scripts/train_sense_model.py --train_files my.jsonl --output_dir my-sense-model

The last stdout line is a JSON object with the held-out figures (`--output` writes it too).
"""

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from vlmixer.processing.concepts import ConceptVocabulary
from vlmixer.processing.sense import SENSE_MODEL_DIR, SenseModel, offline_base_model, quiet_peft
from vlmixer.scripts.atomic import FILE_MODE, atomic_write_text
from vlmixer.scripts.checkpointing import staged_directory


DATA_DIR = Path(__file__).resolve().parent / "data"
EVALUATION_FILE = Path(__file__).resolve().parent.parent / "tests" / "data" / "matcher_labelled.jsonl"
SHAPES = "circle square triangle star heart cross arrow crescent hexagon diamond".split()
# Words with common other senses, none of them a COCO-80 or Fashion-MNIST class: the `extra` and `extra2` vocabularies.
WORD_SENSE_CLASSES = {
    "extra": ("crane seal bass jaguar palm pitcher nail match fan ruler spring pen key drum trunk pipe bow organ ring "
              "mole shell chip cricket turkey tank bulb net flag iron file saw plate pot bucket mat lemon boxer").split(),
    "extra2": ("anchor bolt button chain crown jack kiwi lamp mask monitor nut plug pool rock rose scale slide spade "
               "stamp stool straw tape tire tower trumpet wheel whip badge torch cane club tablet pump bat glass cap").split(),
}  # fmt: skip


def labelled_vocabulary(name: str) -> ConceptVocabulary:
    """The vocabulary a labelled line names: a shipped one, "digits" (classes "0"-"9"), "shapes", "extra", "extra2"."""
    if name == "digits":
        return ConceptVocabulary.from_class_names([str(digit) for digit in range(10)])
    if name == "shapes":
        return ConceptVocabulary.from_class_names(SHAPES)
    if name in WORD_SENSE_CLASSES:
        return ConceptVocabulary.from_class_names(WORD_SENSE_CLASSES[name])
    return ConceptVocabulary.shipped(name)


def read_labelled(paths: list[Path]) -> list[dict]:
    """The labelled lines of `paths`; a line that is not a labelled sentence stops with its file and number."""
    rows = []
    for path in paths:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or not all(
                    isinstance(row.get(key), kind) for key, kind in (("vocabulary", str), ("text", str), ("expected", list))
                ):
                    raise ValueError("needs 'vocabulary', 'text' and 'expected'")
            except ValueError as error:
                raise ValueError(f"{path}:{number} is not a labelled sentence: {error}") from error
            rows.append(row)
    return rows


def labelled_mentions(rows: list[dict]) -> list[dict]:
    """
    Every spelling match of every line: {"row", "text", "start", "end", "concept", "visual" (labelled so), "kept" (by
    the rules of `find`), "checked" (a word the sense model is asked about: no function word, number word or
    numeral)}. Expected spans name text and concept, not a position: where a word occurs more often than it is expected
    ("how to tie a silk tie"), the occurrences the rules keep take the expected ones first, then the earliest.
    """
    vocabularies, mentions = {}, []
    for index, row in enumerate(rows):
        name = row["vocabulary"]
        if name not in vocabularies:
            checked = labelled_vocabulary(name)
            vocabularies[name] = checked, ConceptVocabulary.from_dict({**checked.to_dict(), "sense_check": False, "exclude": []})
        checked, spelling = vocabularies[name]
        kept = {(match.start, match.end) for match in checked.find(row["text"])}
        found = [{"row": index, "text": row["text"], "start": match.start, "end": match.end, "concept": match.concept,
                  "key": (match.text.lower(), match.concept), "kept": (match.start, match.end) in kept, "visual": False,
                  "checked": not checked.is_function_form(match.text)}
                 for match in spelling.find(row["text"])]  # fmt: skip
        expected = Counter((item["text"].lower(), item["concept"]) for item in row["expected"])
        for mention in sorted(found, key=lambda mention: not mention["kept"]):  # stable: kept ones first, in order
            if expected[mention["key"]] > 0:
                expected[mention["key"]] -= 1
                mention["visual"] = True
        mentions += [{key: value for key, value in mention.items() if key != "key"} for mention in found]
    return mentions


def model_inputs(mentions: list[dict]) -> list[tuple[str, int, int, str]]:
    """The (sentence, start, end, concept) tuples `SenseModel` reads, from `labelled_mentions` entries."""
    return [(m["text"], m["start"], m["end"], m["concept"]) for m in mentions]


def checked_probabilities(model: SenseModel, mentions: list[dict], kept: np.ndarray) -> np.ndarray:
    """
    The model's probability for each mention the matcher asks it about (`kept` so far and `checked`), as the
    processor's corpus check does; 1.0 for the others, which no threshold drops.
    """
    asked = kept & np.array([mention["checked"] for mention in mentions], dtype=bool)
    probabilities = np.ones(len(mentions), dtype=np.float32)
    probabilities[asked] = model.probabilities(model_inputs([mentions[i] for i in np.flatnonzero(asked)]))
    return probabilities


def matcher_scores(rows: list[dict], model: SenseModel | None = None, sense_check: bool = True) -> dict:
    """
    {vocabulary or "all": (precision, recall)} of the matcher on labelled lines: `find` with its rules (spelling alone
    when not `sense_check`), then `model` where given. Recall counts every expected span.
    """
    mentions = labelled_mentions(rows)
    kept = np.array([mention["kept"] or not sense_check for mention in mentions], dtype=bool)
    if model is not None:
        kept &= checked_probabilities(model, mentions, kept) >= model.threshold
    visual = np.array([mention["visual"] for mention in mentions], dtype=bool)
    names = np.array([rows[mention["row"]]["vocabulary"] for mention in mentions])
    scores = {}
    for name in (*dict.fromkeys(row["vocabulary"] for row in rows), "all"):
        chosen = np.ones(len(mentions), bool) if name == "all" else names == name
        expected = sum(len(row["expected"]) for row in rows if name in ("all", row["vocabulary"]))
        hits = int((kept & visual & chosen).sum())
        scores[name] = [round(hits / max(int((kept & chosen).sum()), 1), 4), round(hits / max(expected, 1), 4)]
    return scores


def precision_recall(predicted: np.ndarray, visual: np.ndarray) -> tuple[float, float]:
    hits = float((predicted & visual).sum())
    return hits / max(int(predicted.sum()), 1), hits / max(int(visual.sum()), 1)


def recall_threshold(probabilities: np.ndarray, kept: np.ndarray, visual: np.ndarray, min_recall: float) -> float:
    """
    The highest threshold at which the matcher (rules, then model) still finds `min_recall` of the visual mentions
    (the lowest tried when none does). Recall first: a word the check wrongly drops is one fewer mix in a large
    corpus, a trap it keeps teaches a wrong pairing; and held-out precision and recall trade evenly here (their F1
    moves by under 0.02 between thresholds 0.05 and 0.7).
    """
    thresholds = np.round(np.arange(0.95, 0.0, -0.01), 2)
    for threshold in thresholds:
        if precision_recall(kept & (probabilities >= threshold), visual)[1] >= min_recall:
            return float(threshold)
    return float(thresholds[-1])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_files", nargs="+", type=Path, default=sorted(DATA_DIR.glob("sense_train_*.jsonl")),
                        help="labelled JSON-lines files (default: scripts/data/sense_train_*.jsonl)")  # fmt: skip
    parser.add_argument("--output_dir", type=Path, default=SENSE_MODEL_DIR, help="where the adapter and unit go")
    parser.add_argument("--base_model", default=None, help="default: the offline all-MiniLM-L6-v2 (else its Hub id)")
    parser.add_argument("--lora_rank", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--validation_share", type=float, default=0.15, help="sentences held out for the threshold")
    parser.add_argument("--min_recall", type=float, default=0.95,
                        help="the threshold is the highest that keeps this recall on the held-out sentences")  # fmt: skip
    parser.add_argument("--evaluation_file", type=Path, default=EVALUATION_FILE,
                        help="labelled lines to report precision / recall on, rules alone and with the model (default: "
                             "tests/data/matcher_labelled.jsonl, never trained on; 'none' to skip)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite_output_dir", action="store_true", help="replace a sense model already there")
    parser.add_argument("--output", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if not args.train_files:
        parser.error("no --train_files (and none in scripts/data/)")
    if not 0 < args.validation_share < 1:
        parser.error("--validation_share must be between 0 and 1")
    if args.output_dir.exists() and not args.overwrite_output_dir and args.output_dir != SENSE_MODEL_DIR:
        sys.exit(f"--output_dir {args.output_dir} exists: pass --overwrite_output_dir to replace it")
    return args


def build_model(args) -> SenseModel:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoTokenizer

    base = args.base_model or offline_base_model()
    lora = LoraConfig(r=args.lora_rank, lora_alpha=2 * args.lora_rank, lora_dropout=0.05,
                      target_modules=["query", "key", "value", "dense"])  # fmt: skip
    with quiet_peft():
        encoder = get_peft_model(AutoModel.from_pretrained(base), lora)
    return SenseModel(encoder, AutoTokenizer.from_pretrained(base))


def train(model: SenseModel, mentions: list[dict], args) -> None:
    """AdamW over the adapter and the unit, linear warm-up and decay, shuffled batches of mentions."""
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=args.learning_rate, weight_decay=0.01)
    steps = args.epochs * -(-len(mentions) // args.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 20) * (1 - step / steps))
    rng, targets = np.random.default_rng(args.seed), torch.tensor([m["visual"] for m in mentions], dtype=torch.float)
    from tqdm.auto import tqdm

    model.train()
    with tqdm(total=steps, desc="training the sense model") as bar:
        for _ in range(args.epochs):
            order = rng.permutation(len(mentions))
            for start in range(0, len(order), args.batch_size):
                batch = order[start : start + args.batch_size]
                inputs = model.encode(model_inputs([mentions[i] for i in batch]))
                loss = torch.nn.functional.binary_cross_entropy_with_logits(model(**inputs), targets[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()


def choose_threshold(model: SenseModel, validation: list[dict], args) -> dict:
    """Sets `model.threshold` from the held-out mentions (`recall_threshold`); returns their figures."""
    kept, visual = (np.array([m[key] for m in validation], dtype=bool) for key in ("kept", "visual"))
    probabilities = checked_probabilities(model, validation, kept)
    model.threshold = recall_threshold(probabilities, kept, visual, args.min_recall)
    rules = precision_recall(kept, visual)
    checked = precision_recall(kept & (probabilities >= model.threshold), visual)
    return {"validation_mentions": len(validation), "validation_rules_precision_recall": [round(v, 4) for v in rules],
            "validation_precision_recall": [round(v, 4) for v in checked], "min_recall": args.min_recall,
            "threshold": model.threshold}  # fmt: skip


def evaluation_figures(model: SenseModel, evaluation_file: Path) -> dict:
    """Precision / recall on the evaluation file: spelling alone, the rules, the rules then the model."""
    if str(evaluation_file) == "none" or not evaluation_file.is_file():
        return {}
    rows = read_labelled([evaluation_file])
    return {"evaluation_file": evaluation_file.name, "evaluation_spelling_only": matcher_scores(rows, sense_check=False),
            "evaluation_rules": matcher_scores(rows), "evaluation_rules_and_model": matcher_scores(rows, model)}  # fmt: skip


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    started = time.time()
    try:
        rows = read_labelled(args.train_files)
        mentions = labelled_mentions(rows)
    except (OSError, ValueError) as error:
        sys.exit(str(error))
    held_out = np.random.default_rng(args.seed).random(len(rows)) < args.validation_share
    training = [m for m in mentions if not held_out[m["row"]]]
    validation = [m for m in mentions if held_out[m["row"]]]
    if not training or not validation:
        sys.exit(f"--train_files hold {len(mentions)} spelling matches of their vocabularies: too few to train on and "
                 f"hold out {args.validation_share:.0%} of the sentences (a file with sentences that name its concepts?)")  # fmt: skip
    model = build_model(args)
    train(model, training, args)
    figures = choose_threshold(model, validation, args)
    figures = {"train_sentences": int((~held_out).sum()), "train_mentions": len(training),
               "validation_sentences": int(held_out.sum()), **figures, "lora_rank": args.lora_rank,
               "epochs": args.epochs, "training_seconds": round(time.time() - started, 1),
               **evaluation_figures(model, args.evaluation_file)}  # fmt: skip
    with staged_directory(args.output_dir, overwrite=True) as folder:  # checked before training
        model.encoder.save_pretrained(str(folder))
        (folder / "README.md").unlink(missing_ok=True)  # peft's empty model card: sense_model.json says what this is
        model.save_head(folder, figures)
        for path in (folder, *folder.iterdir()):  # readable like any installed file
            path.chmod(0o755 if path.is_dir() else FILE_MODE)
    print(json.dumps(figures))
    if args.output:
        atomic_write_text(args.output, json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
