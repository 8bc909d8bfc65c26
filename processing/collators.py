"""Data collators that turn dataset rows into VLMixer batches (CMC on the fly, then masked-LM labels)."""

from dataclasses import dataclass, field

import numpy as np
import torch

from .processing_vlmixer import IGNORE_INDEX, VLMixerProcessor


# What VLMixerForPreTraining reads of the processor's CMC output (the rest is bookkeeping for pictures).
TEXT_STREAM_INPUTS = (
    "input_ids", "attention_mask", "position_ids", "visual_features", "visual_boxes", "patch_word_labels",
    "original_input_ids", "original_attention_mask",
)  # fmt: skip


def mask_tokens(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    probability: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    BERT's masking on (B, L) ids: picks `probability` of the `maskable` positions, and of those replaces 80% by
    `[MASK]`, 10% by a random token and keeps 10%. Returns (masked ids, labels with -100 where nothing is predicted).
    """
    picked = (torch.rand(input_ids.shape, generator=generator) < probability) & maskable
    labels = input_ids.masked_fill(~picked, IGNORE_INDEX)
    action = torch.rand(input_ids.shape, generator=generator)
    masked = input_ids.masked_fill(picked & (action < 0.8), mask_token_id)
    random_tokens = torch.randint(vocab_size, input_ids.shape, generator=generator)
    randomised = picked & (action >= 0.8) & (action < 0.9)
    return torch.where(randomised, random_tokens, masked), labels


@dataclass
class DataCollatorForCMC:
    """
    Collates rows `{"text": str}` into a cross-modal CutMix batch: the processor's two views, with the text tokens of
    the mixed view masked for MLM (`labels`) and `patch_word_share` of the visual tokens asked for the word they
    replaced (`patch_word_labels`). Deterministic: the same `seed` gives the same mixes and masks, batch
    after batch, and `state_dict()` / `load_state_dict()` carry its random state across a resumed run.
    """

    processor: VLMixerProcessor
    cmc_ratio: float | None = None
    mlm_probability: float = 0.15
    patch_word_share: float = 1.0
    max_length: int = 64
    seed: int = 0
    text_column: str = "text"
    _rng: np.random.Generator = field(init=False, repr=False)
    _torch_generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self):
        if not 0.0 <= self.mlm_probability < 1.0:
            raise ValueError(f"`mlm_probability` must be in [0, 1), got {self.mlm_probability}.")
        if not 0.0 <= self.patch_word_share <= 1.0:
            raise ValueError(f"`patch_word_share` must be in [0, 1], got {self.patch_word_share}.")
        self._rng = np.random.default_rng(self.seed)
        self._torch_generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        missing = [index for index, row in enumerate(rows) if self.text_column not in row]
        if missing:
            raise KeyError(f"Rows {missing[:5]} have no {self.text_column!r} column.")
        batch = self.processor(
            text=[row[self.text_column] for row in rows],
            cmc_ratio=self.cmc_ratio,
            generator=self._rng,
            max_length=self.max_length,
        )
        batch = {name: batch[name] for name in TEXT_STREAM_INPUTS}
        if self.mlm_probability > 0:
            batch["input_ids"], batch["labels"] = self._mask(batch["input_ids"], batch["attention_mask"])
        if self.patch_word_share < 1.0:
            asked = torch.rand(batch["patch_word_labels"].shape, generator=self._torch_generator) < self.patch_word_share
            batch["patch_word_labels"] = batch["patch_word_labels"].masked_fill(~asked, IGNORE_INDEX)
        return batch

    def _mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokenizer = self.processor.tokenizer
        special = torch.tensor(tokenizer.all_special_ids + [self.processor.image_token_id])
        maskable = attention_mask.bool() & ~torch.isin(input_ids, special)
        return mask_tokens(
            input_ids, maskable, tokenizer.mask_token_id, len(tokenizer), self.mlm_probability, self._torch_generator
        )

    def state_dict(self) -> dict:
        return {"numpy": self._rng.bit_generator.state, "torch": self._torch_generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self._rng.bit_generator.state = state["numpy"]
        self._torch_generator.set_state(state["torch"])


__all__ = ["DataCollatorForCMC", "mask_tokens"]
