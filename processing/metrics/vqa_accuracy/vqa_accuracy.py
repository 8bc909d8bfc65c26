"""VQA accuracy, as an `evaluate` metric (loads offline with `evaluate.load(<this folder>)`)."""

import re

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """
VQA accuracy (Antol et al., 2015). With the human answers of each question as references, an answer is right
in proportion to how many humans gave it: min(#humans who said it / 3, 1), averaged over the leave-one-annotator-out
subsets as the official evaluation does; a single reference answer is simply the ground truth (exact match).
With soft targets as references ({"answers": [...], "scores": [...]}, the VQA training targets), an answer scores
the target score of that answer (0 if absent). Answers are normalised as the official evaluation does (lower case,
punctuation, number words to digits, articles dropped, contractions), on both sides.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): the predicted answer of each question.
    references: per question, either the list of human answers (`list` of `str`), or soft targets
        `{"answers": list of str, "scores": list of float}`.
    question_types (`list` of `str`, optional): a type per question; adds the accuracy of each type.
    normalize (`bool`, default `True`): apply the official answer normalisation.
Returns:
    accuracy (`float` in [0, 1]): the mean per-question accuracy; `accuracy_by_type` (`dict`) with question_types;
    `questions` (`int`).
Examples:
    >>> vqa = evaluate.load("processing/metrics/vqa_accuracy")
    >>> vqa.compute(predictions=["two"], references=[["2", "2", "2", "3"]])
    {'accuracy': 0.75, 'questions': 1}
"""

_CITATION = """
@inproceedings{antol2015vqa,
  title={VQA: Visual Question Answering},
  author={Antol, Stanislaw and Agrawal, Aishwarya and Lu, Jiasen and Mitchell, Margaret and Batra, Dhruv and Zitnick, C. Lawrence and Parikh, Devi},
  booktitle={ICCV},
  year={2015}
}
"""

NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
                "seven": "7", "eight": "8", "nine": "9", "ten": "10"}  # fmt: skip
ARTICLES = {"a", "an", "the"}
PUNCTUATION = [
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
]
PERIOD = re.compile(r"\.(?!\d)")  # a period not followed by a digit (what the official pattern does)
DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# Contractions written without their apostrophes ("dont") are restored, as the official evaluation does.
CONTRACTIONS = {
    form.replace("'", ""): form
    for form in (
        "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd "
        "he'd've he's how'd how'll how's i'd've i'm i've isn't it'd it'd've it'll let's ma'am mightn't mightn't've "
        "might've mustn't must've needn't not've o'clock oughtn't shan't she'd've she's should've shouldn't "
        "shouldn't've somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's something'd "
        "something'd've something'll that's there'd there'd've there're there's they'd they'd've they'll they're "
        "they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's where'd where's where've "
        "who'd who'd've who'll who's who've why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll "
        "y'all'd've you'd you'd've you'll you're you've"
    ).split()
}


def strip_punctuation(text: str) -> str:
    """Punctuation next to a space (or anywhere when the text has a digit-comma-digit) is dropped, other punctuation
    becomes a space; periods not followed by a digit are dropped."""
    out = text
    for mark in PUNCTUATION:
        if f"{mark} " in text or f" {mark}" in text or DIGIT_COMMA_DIGIT.search(text):
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return PERIOD.sub("", out)


def normalize_answer(answer: str) -> str:
    """The official VQA answer normalisation: "Two dogs!" -> "2 dogs", "the t-shirt" -> "t shirt"."""
    text = strip_punctuation(answer.replace("\n", " ").replace("\t", " ").strip())
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def human_answer_accuracy(prediction: str, answers: list[str]) -> float:
    """min(#humans who gave the answer / 3, 1), averaged over the subsets that leave one human out; exact match when
    there is a single reference answer."""
    if not answers:
        raise ValueError("A question needs at least one reference answer.")
    if len(answers) == 1:
        return float(prediction == answers[0])
    matches = sum(answer == prediction for answer in answers)
    # leaving out a human who gave the prediction removes one match, leaving out another removes none
    left_out = [min(1.0, (matches - (answer == prediction)) / 3) for answer in answers]
    return float(np.mean(left_out))


def soft_score_accuracy(prediction: str, answers: list[str], scores: list[float]) -> float:
    """The target score of the predicted answer (the highest if it is listed twice), 0 if it is not a target."""
    if len(answers) != len(scores):
        raise ValueError(
            f"Soft targets need one score per answer, got {len(answers)} answers and {len(scores)} scores."
        )
    return float(max([score for answer, score in zip(answers, scores) if answer == prediction], default=0.0))


def vqa_accuracy(predictions, references, normalize: bool = True) -> list[float]:
    """The accuracy of each question (see `human_answer_accuracy` and `soft_score_accuracy`)."""
    clean = normalize_answer if normalize else (lambda answer: answer.strip().lower())
    accuracies = []
    for prediction, reference in zip(predictions, references):
        if isinstance(reference, dict):
            answers = [clean(a) for a in reference["answers"]]
            accuracies.append(soft_score_accuracy(clean(prediction), answers, reference["scores"]))
        else:
            accuracies.append(human_answer_accuracy(clean(prediction), [clean(a) for a in reference]))
    return accuracies


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VQAAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                # soft targets first: a dict would also encode as a list of strings (its keys)
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": {
                            "answers": datasets.Sequence(datasets.Value("string")),
                            "scores": datasets.Sequence(datasets.Value("float64")),
                        },
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Sequence(datasets.Value("string")),
                    }
                ),
            ],
            reference_urls=["https://visualqa.org/evaluation.html"],
        )

    def _compute(self, predictions, references, question_types=None, normalize=True):
        accuracies = vqa_accuracy(predictions, references, normalize)
        results = {"accuracy": float(np.mean(accuracies))}
        if question_types is not None:
            if len(question_types) != len(accuracies):
                raise ValueError(f"Got {len(question_types)} question_types for {len(accuracies)} questions.")
            by_type: dict[str, list[float]] = {}
            for question_type, accuracy in zip(question_types, accuracies):
                by_type.setdefault(str(question_type), []).append(accuracy)
            results["accuracy_by_type"] = {name: float(np.mean(values)) for name, values in sorted(by_type.items())}
        return {**results, "questions": len(accuracies)}
