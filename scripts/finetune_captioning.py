"""Fine-tune VLMixer for image captioning with `VLMixerForCaptioning` (Oscar / VinVL recipe: the image's regions
first, then the caption, causal, trained with the next-token loss). Every reference caption of a train image is one
training example.

Evaluation generates a caption per image with beam search (--num_beams, --max_new_tokens) and scores it against all
the image's references with BLEU-4, ROUGE-L and CIDEr-D (the `caption_metrics` evaluate module, loaded offline), on
validation every epoch (the best epoch by CIDEr is kept) and on test at the end. The output folder loads with
`AutoModelForImageTextToText.from_pretrained` and `AutoProcessor`; captions come from `model.generate(
visual_features=..., visual_boxes=..., region_mask=..., num_beams=3, max_new_tokens=20)`.

Example:
  python scripts/finetune_captioning.py --model vlmixer-small --data_dir outputs/tasks \\
      --output_dir outputs/finetune/captioning
"""

import evaluate

from vlmixer.modeling_vlmixer import VLMixerForCaptioning
from vlmixer.processing.collators import DataCollatorForRegionsAndText
from vlmixer.processing.metrics import metric_path

from vlmixer.scripts.finetuning import (
    FullSetTrainer,
    base_parser,
    batches,
    exits_in_one_line,
    load_model,
    load_processor,
    load_task_data,
    run,
    training_arguments,
)


TASK = "captioning"
COLUMNS = """  image       path of the image file
  boxes       its regions, [[x1, y1, x2, y2], ...] normalised
  references  the reference captions (list of strings); each is a training target
  text        (optional) one caption, used for the validation loss (default: the first reference)"""
REPORTED = ("Bleu_4", "ROUGE_L", "CIDEr")


def parse_args(argv=None):
    parser = base_parser(__doc__, TASK, COLUMNS)
    parser.add_argument("--num_beams", type=int, default=3)
    parser.add_argument("--max_new_tokens", type=int, default=20)
    return parser.parse_args(argv)


def one_row_per_reference(dataset):
    """Train rows with their `text` set to each reference in turn (an image with 5 references gives 5 rows)."""

    def explode(rows: dict) -> dict:
        exploded = {name: [] for name in rows}
        for index, references in enumerate(rows["references"]):
            for reference in references:
                for name in rows:
                    exploded[name].append(reference if name == "text" else rows[name][index])
        return exploded

    if "text" not in dataset.column_names:
        dataset = dataset.add_column("text", [references[0] for references in dataset["references"]])
    return dataset.map(explode, batched=True)


def with_text(dataset):
    """Evaluation rows need a `text` (the loss's target): the first reference when the data has none."""
    if "text" in dataset.column_names:
        return dataset
    return dataset.add_column("text", [references[0] for references in dataset["references"]])


def caption_metrics(processor, collator, batch_size: int, num_beams: int, max_new_tokens: int):
    """`full_set_metrics` for `FullSetTrainer`: beam-search captions of every image, scored against its references."""
    metric = evaluate.load(metric_path("caption_metrics"))

    def compute(model, dataset) -> dict:
        captions = []
        for batch in batches(dataset, collator, batch_size, model.device):
            generated = model.generate(visual_features=batch["visual_features"], visual_boxes=batch["visual_boxes"],
                                       region_mask=batch["region_mask"], num_beams=num_beams,
                                       max_new_tokens=max_new_tokens)  # fmt: skip
            captions += processor.tokenizer.batch_decode(generated, skip_special_tokens=True)
        scores = metric.compute(predictions=captions, references=dataset["references"], meteor=False)
        return {**{name: scores[name] for name in REPORTED}, "example_caption": captions[0]}

    return compute


@exits_in_one_line
def main(argv=None) -> dict:
    args = parse_args(argv)
    processor = load_processor(args)
    data = load_task_data(args, TASK, processor)
    data.train, data.validation, data.test = one_row_per_reference(data.train), with_text(data.validation), with_text(data.test)
    model = load_model(VLMixerForCaptioning, args)
    images_only = DataCollatorForRegionsAndText(processor, data.cache, args.max_length, text_column=None)
    trainer = FullSetTrainer(
        model=model,
        args=training_arguments(args, "CIDEr"),
        train_dataset=data.train,
        eval_dataset=data.validation,
        data_collator=DataCollatorForRegionsAndText(processor, data.cache, args.max_length, caption_labels=True),
        full_set_metrics=caption_metrics(processor, images_only, args.per_device_eval_batch_size, args.num_beams,
                                         args.max_new_tokens),  # fmt: skip
    )
    return run(args, TASK, trainer, data, processor, extra={"num_beams": args.num_beams})


if __name__ == "__main__":
    main()
