"""Fine-tune VLMixer for image-text classification (visual entailment style: a scene and a statement -> entailment /
neutral / contradiction) with `VLMixerForSequenceClassification` on `[CLS] statement [SEP] regions [SEP]`.

Metrics: accuracy and macro-F1 on validation every epoch (the best epoch by accuracy is kept) and on test at the end.
The output folder loads with `AutoModelForSequenceClassification.from_pretrained` and `AutoProcessor`.

Example:
  python scripts/finetune_classification.py --model_name_or_path vlmixer-small --dataset_name outputs/tasks \\
      --dataset_config_name classification --output_dir outputs/finetune/classification --num_train_epochs 2
"""

from vlmixer.modeling_vlmixer import VLMixerForSequenceClassification
from vlmixer.processing.collators import DataCollatorForImageText

from vlmixer.scripts.finetuning import DATA_FORMAT, exits_in_one_line, finetune_classifier


TASK = "classification"
COLUMNS = """  image   the image (an Image feature, a file path or bytes)
  boxes   its regions, [[x1, y1, x2, y2], ...] normalised
  text    the statement
  label   the class name (entailment / neutral / contradiction for make_tasks.py data; a ClassLabel column's names,
          else the train split's names sorted) or its integer id"""


@exits_in_one_line
def main(argv=None) -> dict:
    return finetune_classifier(argv, __doc__ + DATA_FORMAT.format(columns=COLUMNS), TASK,
                               VLMixerForSequenceClassification, DataCollatorForImageText)  # fmt: skip


if __name__ == "__main__":
    main()
