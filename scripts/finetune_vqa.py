"""Fine-tune VLMixer for visual question answering with `VLMixerForQuestionAnswering`: `[CLS] question [SEP] regions
[SEP]` -> a score per answer of a fixed vocabulary, trained on VQA soft scores (binary cross-entropy, ViLT's loss).

Answer vocabulary: <data_dir>/vqa/answers.json (or <data_dir>/answers.json), a JSON list of answers, when present;
else every answer of the train split. Metric: the VQA accuracy of the top answer against the soft targets (the
`vqa_accuracy` evaluate module, loaded offline), on validation every epoch (the best epoch is kept) and on test at the
end. The output folder loads with `AutoModelForVisualQuestionAnswering.from_pretrained` and `AutoProcessor`.

Example:
  python scripts/finetune_vqa.py --model vlmixer-small --data_dir outputs/tasks --output_dir outputs/finetune/vqa
"""

import json
from pathlib import Path

import evaluate
import numpy as np
from transformers import Trainer

from vlmixer.modeling_vlmixer import VLMixerForQuestionAnswering
from vlmixer.processing.collators import DataCollatorForImageText
from vlmixer.processing.metrics import metric_path
from vlmixer.processing.tasks import TaskDataError

from vlmixer.scripts.finetuning import (
    base_parser,
    exits_in_one_line,
    load_model,
    load_processor,
    load_task_data,
    run,
    training_arguments,
)


TASK = "vqa"
COLUMNS = """  image    path of the image file
  boxes    its regions, [[x1, y1, x2, y2], ...] normalised
  text     the question
  answers  the candidate answers (list of strings), e.g. ["2"] or the distinct human answers
  scores   their soft scores (list of floats in [0, 1]; VQA: min(1, annotators who gave it / 3))"""


def parse_args(argv=None):
    return base_parser(__doc__, TASK, COLUMNS).parse_args(argv)


def answer_vocabulary(data_dir: str, train) -> list[str]:
    """The answers the classifier scores: the task folder's answers.json, else the train split's answers in order of
    first appearance."""
    for candidate in (Path(data_dir) / TASK / "answers.json", Path(data_dir) / "answers.json"):
        if candidate.is_file():
            try:
                answers = json.loads(candidate.read_text())
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise TaskDataError(f"{candidate} is not JSON ({error}): it should hold a list of answers.") from None
            if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
                raise TaskDataError(f"{candidate} should hold a non-empty JSON list of answers (strings).")
            return answers
    return list(dict.fromkeys(answer for answers in train["answers"] for answer in answers))


def vqa_compute_metrics(answers: list[str]):
    """`compute_metrics`: the VQA accuracy of each question's top-scored answer, its soft targets rebuilt from the
    label scores (the answers the collator placed in the vocabulary)."""
    metric = evaluate.load(metric_path("vqa_accuracy"))

    def compute(eval_prediction) -> dict:
        predicted = np.asarray(eval_prediction.predictions).argmax(axis=-1)
        references = []
        for scores in np.asarray(eval_prediction.label_ids):
            given = np.flatnonzero(scores > 0)
            references.append({"answers": [answers[i] for i in given], "scores": [float(scores[i]) for i in given]})
        result = metric.compute(predictions=[answers[i] for i in predicted], references=references)
        return {"accuracy": result["accuracy"]}

    return compute


@exits_in_one_line
def main(argv=None) -> dict:
    args = parse_args(argv)
    processor = load_processor(args)
    data = load_task_data(args, TASK, processor)
    answers = answer_vocabulary(args.data_dir, data.train)
    answer_to_id = {answer: index for index, answer in enumerate(answers)}
    model = load_model(VLMixerForQuestionAnswering, args, num_labels=len(answers), id2label=dict(enumerate(answers)),
                       label2id=answer_to_id)  # fmt: skip
    trainer = Trainer(
        model=model,
        args=training_arguments(args, "accuracy"),
        train_dataset=data.train,
        eval_dataset=data.validation,
        data_collator=DataCollatorForImageText(processor, data.cache, args.max_length, answer_to_id=answer_to_id),
        compute_metrics=vqa_compute_metrics(answers),
    )
    return run(args, TASK, trainer, data, processor, extra={"answers": len(answers)})


if __name__ == "__main__":
    main()
