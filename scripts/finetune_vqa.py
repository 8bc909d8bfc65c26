"""Fine-tune VLMixer for visual question answering with `VLMixerForQuestionAnswering`: `[CLS] question [SEP] regions
[SEP]` -> a score per answer of a fixed vocabulary, trained on VQA soft scores (binary cross-entropy, ViLT's loss).

Answer vocabulary: --answers_file (a JSON list of answers), by default answers.json beside the train data file when
there is one, else every answer of the train split. Metric: the VQA accuracy of the top answer against the soft
targets (the `vqa_accuracy` evaluate module, loaded offline), on validation every epoch (the best epoch is kept) and
on test at the end. The output folder loads with `AutoModelForVisualQuestionAnswering.from_pretrained` and
`AutoProcessor`.

Example:
  python scripts/finetune_vqa.py --model_name_or_path vlmixer-small --dataset_name outputs/tasks \\
      --dataset_config_name vqa --output_dir outputs/finetune/vqa
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import evaluate
import numpy as np

from vlmixer.modeling_vlmixer import VLMixerForQuestionAnswering
from vlmixer.processing.collators import DataCollatorForImageText
from vlmixer.processing.metrics import metric_path
from vlmixer.processing.tasks import TaskDataError

from vlmixer.scripts.finetuning import (
    DATA_FORMAT,
    FinetuningTrainingArguments,
    TaskTrainer,
    exits_in_one_line,
    load_model,
    load_processor,
    load_task_data,
    parse_arguments,
    run,
    setup_logging,
)


TASK = "vqa"
COLUMNS = """  image    the image (an Image feature, a file path or bytes)
  boxes    its regions, [[x1, y1, x2, y2], ...] normalised
  text     the question
  answers  the candidate answers (list of strings), e.g. ["2"] or the distinct human answers
  scores   their soft scores (list of floats in [0, 1]; VQA: min(1, annotators who gave it / 3))"""


@dataclass
class VqaArguments:
    answers_file: str | None = field(
        default=None, metadata={"help": "JSON list of the answers scored (default: answers.json beside the train file)"}
    )


class VqaTrainingArguments(FinetuningTrainingArguments):
    task_metric = "accuracy"


def answer_vocabulary(answers_file: str | None, train_dir: Path | None, train) -> list[str]:
    """The answers the classifier scores: --answers_file, else answers.json beside the train file, else the train
    split's answers in order of first appearance."""
    candidate = Path(answers_file) if answers_file else (train_dir / "answers.json" if train_dir else None)
    if answers_file and not candidate.is_file():
        raise TaskDataError(f"--answers_file {candidate} does not exist.")
    if candidate is not None and candidate.is_file():
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
    model_args, data_args, vqa_args, training_args = parse_arguments(
        __doc__ + DATA_FORMAT.format(columns=COLUMNS), VqaTrainingArguments, argv, extra=(VqaArguments,)
    )
    setup_logging(training_args)
    processor = load_processor(model_args)
    data = load_task_data(TASK, model_args, data_args, training_args, processor)
    answers = answer_vocabulary(vqa_args.answers_file, data.train_dir, data.train or data.validation)
    answer_to_id = {answer: index for index, answer in enumerate(answers)}
    model = load_model(VLMixerForQuestionAnswering, model_args, training_args.seed, num_labels=len(answers),
                       id2label=dict(enumerate(answers)), label2id=answer_to_id)  # fmt: skip
    trainer = TaskTrainer(
        model=model,
        args=training_args,
        train_dataset=data.train,
        eval_dataset=data.validation,
        processing_class=processor,
        data_collator=DataCollatorForImageText(processor, data_args.max_length, answer_to_id=answer_to_id),
        compute_metrics=vqa_compute_metrics(answers),
    )
    return run(TASK, trainer, data, model_args, data_args, extra={"answers": len(answers)})


if __name__ == "__main__":
    main()
