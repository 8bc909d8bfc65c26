"""One pre-training step of a tiny VLMixer on a fixed global batch, on one process or split over N (accelerate launch).

Writes the global loss and the (DDP-averaged) gradients to the file named by argv[1]; the test compares a
1-process run with a 2-process run.
"""

import sys

import numpy as np
import torch
from accelerate import Accelerator
from transformers import AutoTokenizer

from vlmixer.modeling_vlmixer import VLMixerConfig, VLMixerForPreTraining
from vlmixer.processing import ConceptVocabulary, DataCollatorForCMC, PatchGalleryBuilder, VLMixerProcessor
from vlmixer.processing.processing_vlmixer import efficientnet_image_processor
from vlmixer.scripts.distributed import end_process_group

SENTENCES = [
    "A white t-shirt and blue jeans.", "She wore a red dress.", "Two bags and a coat.", "Sneakers under the bed.",
    "A pullover for the winter.", "Leather sandals on the beach.", "An ankle boot and a shirt.", "Nothing to see.",
]  # fmt: skip


# Half the rows name no concept: split by halves, the second process gets no visual token at all.
UNEVEN_SENTENCES = SENTENCES[:4] + ["The meeting was moved.", "Prices rose again.", "It rained all day.", "Hello."]


def global_batch(tokenizer_path: str, sentences: list[str]) -> dict:
    builder = PatchGalleryBuilder("precomputed:check", 16)
    rng = np.random.default_rng(0)
    vocabulary = ConceptVocabulary.fashion_mnist()
    for concept in vocabulary.labels:
        builder.add(concept, rng.normal(size=(3, 16)), np.tile([0.0, 0.0, 1.0, 1.0], (3, 1)), np.arange(3), np.ones(3))
    processor = VLMixerProcessor(AutoTokenizer.from_pretrained(tokenizer_path), efficientnet_image_processor(32),
                                 backbone_id="precomputed:check", concepts=vocabulary, gallery=builder.build())  # fmt: skip
    return DataCollatorForCMC(processor, cmc_ratio=1.0, mlm_probability=0.3, seed=0)([{"text": s} for s in sentences])


def rows_of(batch: dict, rows: list[int], image_token_id: int) -> dict:
    """The sub-batch of `rows`, with the visual features of exactly their placeholders."""
    counts = (batch["input_ids"] == image_token_id).sum(dim=1)
    starts = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    patches = torch.cat([torch.arange(starts[r], starts[r + 1]) for r in rows])
    return {key: value[patches] if key.startswith("visual_") else value[rows] for key, value in batch.items()}


def main(output_file: str, tokenizer_path: str, uneven: bool = False) -> None:
    one_step(output_file, tokenizer_path, uneven)
    end_process_group()  # gloo left to interpreter exit aborts a process at times (SIGABRT in its worker threads)


def one_step(output_file: str, tokenizer_path: str, uneven: bool) -> None:
    """The step; on return nothing holds the DDP model, whose process group end_process_group() then destroys
    (destroyed under a live DDP model, gloo hung at exit)."""
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    config = VLMixerConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, visual_feature_dim=16, vision_backbone="precomputed",
                           feature_source="check", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
    model = VLMixerForPreTraining(config)
    batch = global_batch(tokenizer_path, UNEVEN_SENTENCES if uneven else SENTENCES)
    rank, world = accelerator.process_index, accelerator.num_processes
    share = len(SENTENCES) // world  # uneven: contiguous halves, so the second holds no visual token
    rows = list(range(rank * share, (rank + 1) * share)) if uneven else list(range(rank, len(SENTENCES), world))
    local = rows_of(batch, rows, config.image_token_id)
    model = accelerator.prepare(model)
    outputs = model(**local)
    accelerator.backward(outputs.loss)
    losses = {name: accelerator.reduce(getattr(outputs, name).detach(), "mean")
              for name in ("loss", "mlm_loss", "patch_word_loss", "contrastive_loss", "patch_alignment_loss")}  # fmt: skip
    if accelerator.is_main_process:
        grads = {name: p.grad for name, p in accelerator.unwrap_model(model).named_parameters() if p.grad is not None}
        torch.save({"losses": losses, "grads": grads, "world": world}, output_file)
    accelerator.free_memory()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], uneven=len(sys.argv) > 3 and sys.argv[3] == "uneven")
