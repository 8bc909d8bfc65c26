"""Fine-tune VLMixer for image-text classification (visual entailment style: a scene and a statement -> entailment /
neutral / contradiction) with `VLMixerForSequenceClassification` on `[CLS] statement [SEP] regions [SEP]`.

Metrics: accuracy and macro-F1 on validation every epoch (the best epoch by accuracy is kept) and on test at the end.
The output folder loads with `AutoModelForSequenceClassification.from_pretrained` and `AutoProcessor`.

Example:
  python scripts/finetune_classification.py --model vlmixer-small --data_dir outputs/tasks \\
      --output_dir outputs/finetune/classification --num_train_epochs 2
"""

from transformers import Trainer

from modeling_vlmixer import VLMixerForSequenceClassification
from processing.collators import DataCollatorForImageText

from finetuning import (
    accuracy_and_macro_f1,
    base_parser,
    load_model,
    load_processor,
    load_task_data,
    run,
    training_arguments,
)


TASK = "classification"
COLUMNS = """  image   path of the image file
  boxes   its regions, [[x1, y1, x2, y2], ...] normalised
  text    the statement
  label   the class name (entailment / neutral / contradiction for make_tasks.py data; the names come from
          tasks.json or a ClassLabel column) or its integer id"""


def parse_args(argv=None):
    return base_parser(__doc__, TASK, COLUMNS).parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    processor = load_processor(args)
    data = load_task_data(args, TASK, processor)
    labels = data.label_names
    model = load_model(VLMixerForSequenceClassification, args, num_labels=len(labels),
                       id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})  # fmt: skip
    trainer = Trainer(
        model=model,
        args=training_arguments(args, "accuracy"),
        train_dataset=data.train,
        eval_dataset=data.validation,
        data_collator=DataCollatorForImageText(processor, data.cache, args.max_length),
        compute_metrics=accuracy_and_macro_f1,
    )
    return run(args, TASK, trainer, data, processor)


if __name__ == "__main__":
    main()
