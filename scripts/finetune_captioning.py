"""Fine-tune VLMixer for image captioning with `VLMixerForCaptioning` (Oscar / VinVL recipe: the image's regions
first, then the caption, causal, trained with the next-token loss). Every reference caption of a train image is one
training example.

Evaluation is `Seq2SeqTrainer`'s with --predict_with_generate (on by default): a caption per image by beam search
(--generation_num_beams, --generation_max_length), scored against all the image's references with BLEU-4, ROUGE-L and
CIDEr-D (the `caption_metrics` evaluate module, loaded offline), on validation every epoch (the best epoch by CIDEr is
kept) and on test at the end. The output folder loads with `AutoModelForImageTextToText.from_pretrained` and
`AutoProcessor`; captions come from `model.generate(visual_features=..., visual_boxes=..., region_mask=...,
num_beams=3, max_new_tokens=20)`.

Example:
  python scripts/finetune_captioning.py --model_name_or_path vlmixer-small --dataset_name outputs/tasks \\
      --dataset_config_name captioning --output_dir outputs/finetune/captioning
"""

from dataclasses import dataclass

import evaluate
import numpy as np
import torch
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

from vlmixer.modeling_vlmixer import VLMixerForCaptioning
from vlmixer.processing.collators import DataCollatorForRegionsAndText
from vlmixer.processing.metrics import metric_path

from vlmixer.scripts.finetuning import (
    DATA_FORMAT,
    FinetuningTrainingArguments,
    TaskTrainerMixin,
    exits_in_one_line,
    load_model,
    load_processor,
    load_task_data,
    parse_arguments,
    run,
    setup_logging,
    new_default,
)


TASK = "captioning"
COLUMNS = """  image       the image (an Image feature, a file path or bytes)
  boxes       its regions, [[x1, y1, x2, y2], ...] normalised
  references  the reference captions (list of strings); each is a training target
  text        (optional) one caption, used for the validation loss (default: the first reference)"""
REPORTED = ("Bleu_4", "ROUGE_L", "CIDEr")
IMAGE_INPUTS = ("visual_features", "visual_boxes", "region_mask")


@dataclass
class CaptioningTrainingArguments(FinetuningTrainingArguments, Seq2SeqTrainingArguments):
    """Our defaults with `Seq2SeqTrainingArguments`' generation settings: captions generated at evaluation."""

    predict_with_generate: bool = new_default("predict_with_generate", True, Seq2SeqTrainingArguments)
    generation_num_beams: int | None = new_default("generation_num_beams", 3, Seq2SeqTrainingArguments)
    generation_max_length: int | None = new_default("generation_max_length", 21, Seq2SeqTrainingArguments)  # 20 words

    def default_metric(self) -> str:
        return "CIDEr" if self.predict_with_generate else "loss"


class CaptioningTrainer(TaskTrainerMixin, Seq2SeqTrainer):
    """
    `Seq2SeqTrainer` for a decoder-only captioner: its `prediction_step` generates from the batch it is given, and the
    evaluation batch holds the reference caption (for the loss), which generation would only continue. So the loss
    comes from the whole batch, the generated caption from the images alone, and the "labels" handed to
    `compute_metrics` are the rows' `reference_ids` (an image's reference captions are a list of strings, not ids).
    """

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        reference_ids = inputs.pop("reference_ids", None)
        if not self.args.predict_with_generate or prediction_loss_only:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys, **gen_kwargs)
        loss, _, _ = super().prediction_step(model, inputs, True, ignore_keys)
        images = {name: inputs[name] for name in IMAGE_INPUTS}
        _, generated, _ = super().prediction_step(model, images, False, ignore_keys, **gen_kwargs)
        return loss, generated, reference_ids


@dataclass
class DataCollatorForCaptionEvaluation(DataCollatorForRegionsAndText):
    """The training batch plus each row's `reference_id` as `reference_ids`, which `CaptioningTrainer` takes out."""

    def __call__(self, rows: list[dict]) -> dict:
        batch = super().__call__(rows)
        if rows and "reference_id" in rows[0]:
            batch["reference_ids"] = torch.tensor([row["reference_id"] for row in rows])
        return batch


def one_row_per_reference(dataset):
    """Train rows with their `text` set to each reference in turn (an image with 5 references gives 5 rows)."""

    def explode(rows: dict) -> dict:
        exploded = {name: [] for name in rows}
        for index, references in enumerate(rows["references"]):
            for reference in references:
                for name in rows:
                    exploded[name].append(reference if name == "text" else rows[name][index])
        return exploded

    return with_text(dataset).map(explode, batched=True, desc="one row per reference")


def with_text(dataset):
    """Rows need a `text` (the loss's target): the first reference when the data has none."""
    if "text" in dataset.column_names:
        return dataset
    return dataset.add_column("text", [references[0] for references in dataset["references"]])


def with_reference_ids(splits: list, start: int = 0) -> tuple[list, list[list[str]]]:
    """Each evaluation split with a `reference_id` column numbering its rows across all the splits, and the
    references of every id: what `compute_metrics` looks the generated captions' references up in."""
    numbered, references = [], []
    for dataset in splits:
        if dataset is None:
            numbered.append(None)
            continue
        ids = range(start + len(references), start + len(references) + len(dataset))
        numbered.append(with_text(dataset).add_column("reference_id", list(ids)))
        references += dataset["references"]
    return numbered, references


def caption_compute_metrics(tokenizer, references: list[list[str]]):
    """`compute_metrics`: the generated captions (padded with -100 between batches) decoded and scored against the
    references of their rows."""
    metric = evaluate.load(metric_path("caption_metrics"))

    def compute(eval_prediction) -> dict:
        tokens = np.asarray(eval_prediction.predictions)
        captions = tokenizer.batch_decode(np.where(tokens < 0, tokenizer.pad_token_id, tokens), skip_special_tokens=True)
        wanted = [references[int(index)] for index in np.asarray(eval_prediction.label_ids)]
        scores = metric.compute(predictions=captions, references=wanted, meteor=False)
        return {name: scores[name] for name in REPORTED}

    return compute


@exits_in_one_line
def main(argv=None) -> dict:
    model_args, data_args, training_args = parse_arguments(
        __doc__ + DATA_FORMAT.format(columns=COLUMNS), CaptioningTrainingArguments, argv
    )
    setup_logging(training_args)
    processor = load_processor(model_args)
    data = load_task_data(TASK, model_args, data_args, training_args, processor)
    with training_args.main_process_first(desc="captions"):
        data.train = one_row_per_reference(data.train) if data.train is not None else None
        (data.validation, data.test), references = with_reference_ids([data.validation, data.test])
    model = load_model(VLMixerForCaptioning, model_args, training_args.seed)
    trainer = CaptioningTrainer(
        model=model,
        args=training_args,
        train_dataset=data.train,
        eval_dataset=data.validation,
        processing_class=processor,
        data_collator=DataCollatorForCaptionEvaluation(processor, data_args.max_length, caption_labels=True),
        compute_metrics=caption_compute_metrics(processor.tokenizer, references) if training_args.predict_with_generate else None,
    )
    return run(TASK, trainer, data, model_args, data_args, extra={"num_beams": training_args.generation_num_beams})


if __name__ == "__main__":
    main()
