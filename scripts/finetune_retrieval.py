"""Fine-tune VLMixer for image-text retrieval with `VLMixerForImageTextRetrieval` on matched pairs: image-text contrast
plus image-text matching with hard negatives (ALBEF). Texts are encoded alone (`[CLS] text [SEP]`), images as their
regions (padded, one row per image).

Evaluation ranks every text against every image of the split by the contrastive similarity (the fast first stage);
with --rerank_k K the top K candidates of each query are re-ranked by the matching head (the second stage). Metric:
Recall@1/5/10 in both directions (the `recall_at_k` evaluate module, loaded offline); a text counts as correct for an
image when its row's `objects` equal the image's (captions name objects and counts, so equal scenes share captions),
or, without an `objects` column, when it is the image's own row. The best epoch by validation mean recall is kept.
transformers has no Auto class for retrieval: reload with `VLMixerForImageTextRetrieval.from_pretrained`.

Example:
  python scripts/finetune_retrieval.py --model_name_or_path vlmixer-small --dataset_name outputs/tasks \\
      --dataset_config_name retrieval --output_dir outputs/finetune/retrieval --rerank_k 10
"""

from dataclasses import dataclass, field

import evaluate
import torch

from vlmixer.modeling_vlmixer import VLMixerForImageTextRetrieval
from vlmixer.processing.collators import DataCollatorForRegionsAndText
from vlmixer.processing.metrics import metric_path
from vlmixer.processing.tasks import retrieval_references

from vlmixer.scripts.finetuning import (
    DATA_FORMAT,
    FinetuningTrainingArguments,
    FullSetTrainer,
    batches,
    exits_in_one_line,
    load_model,
    load_processor,
    load_task_data,
    parse_arguments,
    run,
    setup_logging,
)


TASK = "retrieval"
COLUMNS = """  image    the image (an Image feature, a file path or bytes)
  boxes    its regions, [[x1, y1, x2, y2], ...] normalised
  text     a caption of the image
  objects  (optional) what the image holds, e.g. ["bag", "sneaker"]: rows with equal objects share captions"""
PAIRS_PER_FORWARD = 256


@dataclass
class RetrievalArguments:
    rerank_k: int = field(
        default=0, metadata={"help": "re-rank each query's top K first-stage candidates by the matching head (0: no)"}
    )


class RetrievalTrainingArguments(FinetuningTrainingArguments):
    task_metric = "mean_recall"


def embed_split(model, dataset, collator, batch_size: int):
    """Unit text and image embeddings of every row, and the whole split collated once (for re-ranking)."""
    texts, images = [], []
    for batch in batches(dataset, collator, batch_size, model.device):
        texts.append(model.get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output)
        images.append(model.get_image_features(batch["visual_features"], batch["visual_boxes"], batch["region_mask"]).pooler_output)
    return torch.cat(texts), torch.cat(images)


def rerank(model, everything: dict, similarity: torch.Tensor, k: int, queries_are_images: bool) -> list[list[int]]:
    """Each query's top-k items by `similarity` (queries x items), re-ordered by the matching head's score."""
    top = similarity.topk(min(k, similarity.shape[1]), dim=1).indices
    queries = torch.arange(len(top), device=top.device).repeat_interleave(top.shape[1])
    items = top.reshape(-1)
    image_index, text_index = (queries, items) if queries_are_images else (items, queries)
    regions = model.image_regions(everything["visual_features"], everything["visual_boxes"], everything["region_mask"])
    scores = torch.cat([
        model.matching_logits(everything["input_ids"], everything["attention_mask"], regions,
                              text_index[start : start + PAIRS_PER_FORWARD],
                              image_index[start : start + PAIRS_PER_FORWARD]).float().log_softmax(-1)[:, 1]
        for start in range(0, len(items), PAIRS_PER_FORWARD)
    ]).view_as(top)  # fmt: skip
    order = scores.argsort(dim=1, descending=True)
    return top.gather(1, order).tolist()


def retrieval_metrics(collator, batch_size: int, rerank_k: int):
    """`full_set_metrics` for `FullSetTrainer`: Recall@K of the first stage, and of the re-ranked lists with rerank_k."""
    recall = evaluate.load(metric_path("recall_at_k"))

    def compute(model, dataset) -> dict:
        text_embeds, image_embeds = embed_split(model, dataset, collator, batch_size)
        similarity = image_embeds @ text_embeds.T  # (images, texts): row i's image against every row's text
        references = retrieval_references(dataset)
        results = recall.compute(predictions=similarity.cpu().tolist(), references=references)
        metrics = {key: value for key, value in results.items() if "R@" in key or key == "mean_recall"}
        if rerank_k > 0:
            everything = next(batches(dataset, collator, len(dataset), model.device))
            for queries_are_images, (query, item) in ((True, ("image", "text")), (False, ("text", "image"))):
                scores = similarity if queries_are_images else similarity.T
                ranked = rerank(model, everything, scores, rerank_k, queries_are_images)
                reranked = recall.compute(predictions=ranked, references=references, ranked=True, query_name=query,
                                          item_name=item)  # fmt: skip
                metrics.update({f"reranked_{key}": value for key, value in reranked.items() if "R@" in key})
        return metrics

    return compute


@exits_in_one_line
def main(argv=None) -> dict:
    model_args, data_args, retrieval_args, training_args = parse_arguments(
        __doc__ + DATA_FORMAT.format(columns=COLUMNS), RetrievalTrainingArguments, argv, extra=(RetrievalArguments,)
    )
    setup_logging(training_args)
    processor = load_processor(model_args)
    data = load_task_data(TASK, model_args, data_args, training_args, processor)
    model = load_model(VLMixerForImageTextRetrieval, model_args, training_args.seed)
    evaluation_collator = DataCollatorForRegionsAndText(processor, data_args.max_length)
    trainer = FullSetTrainer(
        model=model,
        args=training_args,
        train_dataset=data.train,
        eval_dataset=data.validation,
        processing_class=processor,
        data_collator=DataCollatorForRegionsAndText(processor, data_args.max_length, return_loss=True),
        full_set_metrics=retrieval_metrics(evaluation_collator, training_args.per_device_eval_batch_size,
                                           retrieval_args.rerank_k),  # fmt: skip
    )
    return run(TASK, trainer, data, model_args, data_args, extra={"rerank_k": retrieval_args.rerank_k})


if __name__ == "__main__":
    main()
