"""Fine-tune VLMixer for visual reasoning over two images (NLVR2 style: two scenes and a statement about both -> true
or false) with `VLMixerForVisualReasoning`: the statement is encoded with each image, `[CLS] statement [SEP] regions
[SEP]`, and the two pooled states are classified together.

Metrics: accuracy and macro-F1 on validation every epoch (the best epoch by accuracy is kept) and on test at the end.
transformers has no Auto class for this head: reload the output folder with
`VLMixerForVisualReasoning.from_pretrained` (or as remote code through `get_class_from_dynamic_module`).

Example:
  python scripts/finetune_reasoning.py --model vlmixer-small --data_dir outputs/tasks \\
      --output_dir outputs/finetune/reasoning --num_train_epochs 2
"""

from vlmixer.modeling_vlmixer import VLMixerForVisualReasoning
from vlmixer.processing.collators import DataCollatorForVisualReasoning

from vlmixer.scripts.finetuning import base_parser, exits_in_one_line, finetune_classifier


TASK = "reasoning"
COLUMNS = """  image_left, boxes_left     the first image's file path and its regions [[x1, y1, x2, y2], ...] (normalised)
  image_right, boxes_right   the second image's
  text                       the statement about both
  label                      "true" / "false" (names from tasks.json or a ClassLabel column) or the integer id"""


def parse_args(argv=None):
    return base_parser(__doc__, TASK, COLUMNS).parse_args(argv)


@exits_in_one_line
def main(argv=None) -> dict:
    return finetune_classifier(parse_args(argv), TASK, VLMixerForVisualReasoning, DataCollatorForVisualReasoning)


if __name__ == "__main__":
    main()
