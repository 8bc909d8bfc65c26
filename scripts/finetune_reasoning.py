"""Fine-tune VLMixer for visual reasoning over two images (NLVR2 style: two scenes and a statement about both -> true
or false) with `VLMixerForVisualReasoning`: the statement is encoded with each image, `[CLS] statement [SEP] regions
[SEP]`, and the two pooled states are classified together.

Metrics: accuracy and macro-F1 on validation every epoch (the best epoch by accuracy is kept) and on test at the end.
transformers has no Auto class for this head: reload the output folder with
`VLMixerForVisualReasoning.from_pretrained` (or as remote code through `get_class_from_dynamic_module`).

Example:
  python scripts/finetune_reasoning.py --model_name_or_path vlmixer-small --dataset_name outputs/tasks \\
      --dataset_config_name reasoning --output_dir outputs/finetune/reasoning --num_train_epochs 2
"""

from vlmixer.modeling_vlmixer import VLMixerForVisualReasoning
from vlmixer.processing.collators import DataCollatorForVisualReasoning

from vlmixer.scripts.finetuning import DATA_FORMAT, exits_in_one_line, finetune_classifier


TASK = "reasoning"
COLUMNS = """  image_left, boxes_left     the first image (Image feature, file path or bytes) and its regions
                             [[x1, y1, x2, y2], ...] (normalised); an imagefolder names its file image_left_file_name
  image_right, boxes_right   the second image's
  text                       the statement about both
  label                      "true" / "false" (or a ClassLabel column's names) or the integer id"""


@exits_in_one_line
def main(argv=None) -> dict:
    return finetune_classifier(argv, __doc__ + DATA_FORMAT.format(columns=COLUMNS), TASK, VLMixerForVisualReasoning,
                               DataCollatorForVisualReasoning)  # fmt: skip


if __name__ == "__main__":
    main()
