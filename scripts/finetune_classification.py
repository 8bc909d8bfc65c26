"""Fine-tune VLMixer for image-text classification (visual entailment style: a scene and a statement -> entailment /
neutral / contradiction) with `VLMixerForSequenceClassification` on `[CLS] statement [SEP] regions [SEP]`.

Metrics: accuracy and macro-F1 on validation every epoch (the best epoch by accuracy is kept) and on test at the end.
The output folder loads with `AutoModelForSequenceClassification.from_pretrained` and `AutoProcessor`.

Example:
  python scripts/finetune_classification.py --model vlmixer-small --data_dir outputs/tasks \\
      --output_dir outputs/finetune/classification --num_train_epochs 2
"""

from vlmixer.modeling_vlmixer import VLMixerForSequenceClassification
from vlmixer.processing.collators import DataCollatorForImageText

from vlmixer.scripts.finetuning import base_parser, exits_in_one_line, finetune_classifier


TASK = "classification"
COLUMNS = """  image   path of the image file
  boxes   its regions, [[x1, y1, x2, y2], ...] normalised
  text    the statement
  label   the class name (entailment / neutral / contradiction for make_tasks.py data; the names come from
          tasks.json or a ClassLabel column) or its integer id"""


def parse_args(argv=None):
    return base_parser(__doc__, TASK, COLUMNS).parse_args(argv)


@exits_in_one_line
def main(argv=None) -> dict:
    return finetune_classifier(parse_args(argv), TASK, VLMixerForSequenceClassification, DataCollatorForImageText)


if __name__ == "__main__":
    main()
