"""Data collators that turn dataset rows into VLMixer pre-training batches, one per stream.

- `DataCollatorForCMC`: text-only sentences -> cross-modal CutMix views with masked-LM and patch-word labels.
- `DataCollatorForTags`: image-only rows (regions + their concept tags) -> `[CLS] tags [SEP] regions [SEP]`, tags masked.
- `DataCollatorForPairs`: image-caption pairs -> caption with regions (masked), plus caption-only and image-only views.

All are deterministic for a seed. Called with `keys` (one per row: `BatchStream.next_batch(with_keys=True)` gives
(epoch, batch, row of the global batch)), each row is mixed and masked from the seed and its key alone: the same
whichever process collates it, with whatever other rows, in whichever DataLoader worker, and nothing to restore on a
resume. Called without keys they draw from one running random state for the batch, which `state_dict()` /
`load_state_dict()` carry across a resume.
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from .processing_vlmixer import IGNORE_INDEX, VLMixerProcessor, pad_rows
from .sense import REJECTED_COLUMN


# What VLMixerForPreTraining reads of the processor's CMC output (the rest is bookkeeping for pictures).
TEXT_STREAM_INPUTS = (
    "input_ids", "attention_mask", "position_ids", "visual_features", "visual_boxes", "patch_word_labels",
    "original_input_ids", "original_attention_mask",
)  # fmt: skip
# Tensors of the processor's output that are flat over the batch's patches, (N, ...) in row order, not (B, L).
FLAT_OVER_PATCHES = ("visual_features", "visual_boxes", "patch_concept_ids", "patch_gallery_indices")


def stack_rows(encoded: list[dict], pad_values: dict[str, int]) -> dict[str, torch.Tensor]:
    """
    One-row processor outputs -> one batch: (1, L_i) tensors right-padded to the longest row (with `pad_values[name]`,
    0 by default), the flat patch tensors concatenated in row order, as the processor lays out a batch.
    """
    batch = {}
    for name in encoded[0]:
        parts = [torch.as_tensor(row[name]) for row in encoded]
        if name in FLAT_OVER_PATCHES:
            batch[name] = torch.cat(parts)
            continue
        length = max(part.shape[1] for part in parts)
        padded = parts[0].new_full((len(parts), length, *parts[0].shape[2:]), pad_values.get(name, 0))
        for index, part in enumerate(parts):
            padded[index, : part.shape[1]] = part[0]
        batch[name] = padded
    return batch


# Ours, not transformers' DataCollatorForLanguageModeling / DataCollatorForWholeWordMask: they accept a
# special_tokens_mask, but draw every mask from one generator over the padded batch, so the masks change with padding
# and with how a global batch is split between processes (ours draws each row from a generator keyed by its (epoch,
# batch, row), over its unpadded length: the same masks on 1 or N processes); their random replacement can draw the
# image placeholder token, a visual slot without a feature (ours turns it into [MASK]); and they cannot promise one
# masked token per row (at_least_one). Whole-word masking would also change BERT's token-level objective.
def mask_tokens(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    probability: float,
    generator: torch.Generator,
    at_least_one: bool = False,
    image_token_id: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    BERT's masking on (B, L) ids: picks `probability` of the `maskable` positions (and, with `at_least_one`, one
    in every row that has any), and of those replaces 80% by `[MASK]`, 10% by a random token and keeps 10%.
    A random token that would be `image_token_id` becomes `[MASK]`: a stray visual placeholder has no feature.
    Returns (masked ids, labels with -100 where nothing is predicted).
    """
    draws = torch.rand(input_ids.shape, generator=generator)
    picked = (draws < probability) & maskable
    if at_least_one:
        lowest = torch.where(maskable, draws, torch.inf).argmin(dim=1, keepdim=True)
        picked |= torch.zeros_like(picked).scatter_(1, lowest, True) & maskable
    labels = input_ids.masked_fill(~picked, IGNORE_INDEX)
    action = torch.rand(input_ids.shape, generator=generator)
    masked = input_ids.masked_fill(picked & (action < 0.8), mask_token_id)
    random_tokens = torch.randint(vocab_size, input_ids.shape, generator=generator)
    if image_token_id is not None:
        random_tokens = random_tokens.masked_fill(random_tokens == image_token_id, mask_token_id)
    randomised = picked & (action >= 0.8) & (action < 0.9)
    return torch.where(randomised, random_tokens, masked), labels


def row_length(attention_mask: torch.Tensor) -> int:
    """The length of a row without its right padding: up to its last attended position."""
    attended = attention_mask.nonzero()
    return int(attended[-1]) + 1 if len(attended) else 0


@dataclass
class SeededCollator:
    """Common ground of the collators: the processor, a seed, and the random state that a resume restores."""

    processor: VLMixerProcessor
    mlm_probability: float = 0.15
    max_length: int = 64
    seed: int = 0
    _rng: np.random.Generator = field(init=False, repr=False)
    _torch_generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self):
        if not 0.0 <= self.mlm_probability < 1.0:
            raise ValueError(f"`mlm_probability` must be in [0, 1), got {self.mlm_probability}.")
        self._rng = np.random.default_rng(self.seed)
        self._torch_generator = torch.Generator().manual_seed(self.seed)

    def mask_text(
        self, batch: dict, at_least_one: bool = False, generators: list[torch.Generator] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks the word tokens of `batch` (not special tokens, visual tokens, regions or padding); with `generators`
        (one per row) each row on its own, over its unpadded length, so that its padding changes no draw."""
        tokenizer = self.processor.tokenizer
        special = torch.tensor(tokenizer.all_special_ids + [self.processor.image_token_id])
        maskable = batch["attention_mask"].bool() & ~torch.isin(batch["input_ids"], special)
        if "token_type_ids" in batch:
            maskable &= batch["token_type_ids"] == 0
        settings = (tokenizer.mask_token_id, len(tokenizer), self.mlm_probability)
        if generators is None:
            return mask_tokens(batch["input_ids"], maskable, *settings, self._torch_generator, at_least_one,
                               self.processor.image_token_id)  # fmt: skip
        masked, labels = batch["input_ids"].clone(), torch.full_like(batch["input_ids"], IGNORE_INDEX)
        for row, generator in enumerate(generators):
            length = row_length(batch["attention_mask"][row])
            masked[row : row + 1, :length], labels[row : row + 1, :length] = mask_tokens(
                batch["input_ids"][row : row + 1, :length], maskable[row : row + 1, :length], *settings, generator,
                at_least_one, self.processor.image_token_id,
            )  # fmt: skip
        return masked, labels

    def row_generators(self, keys: list) -> tuple[list[np.random.Generator], list[torch.Generator]]:
        """Per row, a numpy and a torch generator drawn from the collator's seed and the row's key alone."""
        if any(len(key) == 0 for key in keys):
            raise ValueError("Each row key needs at least one integer.")
        words = [np.random.SeedSequence([self.seed, *map(int, key)]).generate_state(2, np.uint64) for key in keys]
        numpy_generators = [np.random.default_rng(int(first)) for first, _ in words]
        torch_generators = [torch.Generator().manual_seed(int(second) >> 1) for _, second in words]
        return numpy_generators, torch_generators

    @staticmethod
    def check_keys(rows: list[dict], keys) -> None:
        if keys is not None and len(keys) != len(rows):
            raise ValueError(f"{len(keys)} row keys for {len(rows)} rows: pass one key per row.")

    @staticmethod
    def require_columns(rows: list[dict], *columns: str) -> None:
        for column in columns:
            missing = [index for index, row in enumerate(rows) if column not in row]
            if missing:
                raise KeyError(f"Rows {missing[:5]} have no {column!r} column.")

    def state_dict(self) -> dict:
        return {"numpy": self._rng.bit_generator.state, "torch": self._torch_generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self._rng.bit_generator.state = state["numpy"]
        self._torch_generator.set_state(state["torch"])


def rejected_spans(rows: list[dict]) -> list | None:
    """The rows' `sense_rejected` spans (None when the corpus was not sense-checked)."""
    if not rows or REJECTED_COLUMN not in rows[0]:
        return None
    return [row.get(REJECTED_COLUMN) or [] for row in rows]


@dataclass
class DataCollatorForCMC(SeededCollator):
    """
    Rows `{"text": str}` -> a cross-modal CutMix batch: the processor's two views, with the word tokens of the mixed
    view masked for MLM (`labels`) and `patch_word_share` of the visual tokens asked for the word they replaced
    (`patch_word_labels`). Rows that carry `sense_rejected` (from `processing.sense.check_corpus_senses`) never have
    those words mixed.
    """

    cmc_ratio: float | None = None
    patch_word_share: float = 1.0
    text_column: str = "text"

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.patch_word_share <= 1.0:
            raise ValueError(f"`patch_word_share` must be in [0, 1], got {self.patch_word_share}.")

    def __call__(self, rows: list[dict], keys: list | None = None) -> dict[str, torch.Tensor]:
        self.require_columns(rows, self.text_column)
        self.check_keys(rows, keys)
        if keys is None:
            encoded = self.processor(
                text=[row[self.text_column] for row in rows],
                cmc_ratio=self.cmc_ratio,
                generator=self._rng,
                max_length=self.max_length,
                rejected_spans=rejected_spans(rows),
            )
            batch = {name: encoded[name] for name in TEXT_STREAM_INPUTS}
            torch_generators = None
        else:  # each sentence mixed with its own generator (the processor's CMC step, without its per-call
            # argument handling: a quarter of a millisecond a row), then the rows padded together
            numpy_generators, torch_generators = self.row_generators(keys)
            ratio = self.processor.cmc_ratio if self.cmc_ratio is None else self.cmc_ratio
            max_length = self.max_length or self.processor.max_length
            for index, row in enumerate(rows):
                text = row[self.text_column]
                if not isinstance(text, str) or not text.strip():
                    raise ValueError(f"Row {index} has no sentence in {self.text_column!r}: {text!r}.")
            rejected = rejected_spans(rows) or [None] * len(rows)
            encoded = [
                self.processor.cross_modal_cutmix([row[self.text_column]], ratio, generator, max_length,
                                                  None if spans is None else [spans])  # fmt: skip
                for row, generator, spans in zip(rows, numpy_generators, rejected)
            ]
            pad_id = self.processor.tokenizer.pad_token_id
            batch = stack_rows([{name: row[name] for name in TEXT_STREAM_INPUTS} for row in encoded],
                               {"input_ids": pad_id, "original_input_ids": pad_id, "patch_word_labels": IGNORE_INDEX})  # fmt: skip
        if self.mlm_probability > 0:
            batch["input_ids"], batch["labels"] = self.mask_text(batch, generators=torch_generators)
        if self.patch_word_share < 1.0:
            labels = batch["patch_word_labels"]
            if torch_generators is None:
                asked = torch.rand(labels.shape, generator=self._torch_generator) < self.patch_word_share
            else:
                asked = torch.zeros(labels.shape, dtype=torch.bool)
                for row, generator in enumerate(torch_generators):
                    length = row_length(batch["attention_mask"][row])
                    asked[row, :length] = torch.rand(length, generator=generator) < self.patch_word_share
            batch["patch_word_labels"] = labels.masked_fill(~asked, IGNORE_INDEX)
        return batch


@dataclass
class DataCollatorForTags(SeededCollator):
    """
    Image-only rows `{"features": (R, D), "boxes": (R, 4), "tags": [str]}` -> `tag_batch`: the tags as text followed
    by the regions, with tag tokens masked (at least one per row) for tag-aided visual pre-training.
    """

    mlm_probability: float = 0.5

    def __call__(self, rows: list[dict], keys: list | None = None) -> dict[str, torch.Tensor]:
        self.require_columns(rows, "features", "boxes", "tags")
        self.check_keys(rows, keys)
        encoded = self.processor(
            text=[" ".join(dict.fromkeys(row["tags"])) for row in rows],
            region_features=[row["features"] for row in rows],
            boxes=[row["boxes"] for row in rows],
            max_length=self.max_length,
        )
        batch = dict(encoded)
        generators = None if keys is None else self.row_generators(keys)[1]
        batch["input_ids"], batch["labels"] = self.mask_text(batch, at_least_one=True, generators=generators)
        return batch


@dataclass
class DataCollatorForPairs(SeededCollator):
    """
    Paired rows `{"text": caption, "features": (R, D), "boxes": (R, 4)}` -> `pair_batch`: caption and regions with the
    caption masked (`labels`), the caption alone (`caption_*`) and the regions alone (`image_*`) for image-text contrast.
    """

    def __call__(self, rows: list[dict], keys: list | None = None) -> dict[str, torch.Tensor]:
        self.require_columns(rows, "text", "features", "boxes")
        self.check_keys(rows, keys)
        captions = [row["text"] for row in rows]
        batch = dict(
            self.processor(
                text=captions,
                region_features=[row["features"] for row in rows],
                boxes=[row["boxes"] for row in rows],
                max_length=self.max_length,
            )
        )
        generators = None if keys is None else self.row_generators(keys)[1]
        batch["input_ids"], batch["labels"] = self.mask_text(batch, generators=generators)
        caption_only = self.processor(text=captions, cmc_ratio=0.0, max_length=self.max_length)
        batch["caption_input_ids"] = caption_only["input_ids"]
        batch["caption_attention_mask"] = caption_only["attention_mask"]
        batch.update(self.regions_only([len(np.atleast_2d(row["features"])) for row in rows]))
        return batch

    def regions_only(self, region_counts: list[int]) -> dict[str, torch.Tensor]:
        """`[CLS] regions [SEP]` for each image: (B, max R + 2) ids and attention mask."""
        tokenizer = self.processor.tokenizer
        rows = [[tokenizer.cls_token_id] + [self.processor.image_token_id] * count + [tokenizer.sep_token_id]
                for count in region_counts]  # fmt: skip
        ids = torch.from_numpy(pad_rows(rows, tokenizer.pad_token_id))
        return {"image_input_ids": ids, "image_attention_mask": (ids != tokenizer.pad_token_id).long()}


__all__ = ["DataCollatorForCMC", "DataCollatorForPairs", "DataCollatorForTags", "SeededCollator", "mask_tokens", "stack_rows"]


# ============================================================================================== fine-tuning collators
# Rows as `processing.tasks.add_region_features` leaves them: each image's boxes and (R, D) region features
# (`boxes` / `features`, or `boxes_left` / `features_left` and `boxes_right` / `features_right`), text and labels.


def row_regions(row: dict, features_column: str = "features") -> np.ndarray:
    """(R, D) float32 region features of one image of a row."""
    if features_column not in row:
        raise KeyError(f"The row has no {features_column!r} column: add it with processing.tasks.add_region_features.")
    return np.asarray(row[features_column], dtype=np.float32)


def joint_inputs(rows: list[dict]) -> dict:
    """Processor keyword arguments (`text`, `region_features`, `boxes`) for `[CLS] text [SEP] regions [SEP]` of every
    image of every row, row after row (left image before right for reasoning rows), as
    `processing.tasks.processor_inputs` orders them."""
    from .tasks import processor_inputs

    merged = {"text": [], "region_features": [], "boxes": []}
    for row in rows:
        for name, values in processor_inputs(row).items():
            merged[name] += values
    return merged


def pad_regions(features: list[np.ndarray], boxes: list) -> dict[str, torch.Tensor]:
    """Per-image (R_i, D) features and (R_i, 4) boxes -> `visual_features` (B, R, D), `visual_boxes` (B, R, 4) and
    `region_mask` (B, R), padded with zeros to the image with the most regions (R = max R_i)."""
    most = max(len(f) for f in features)
    batch = len(features)
    padded = torch.zeros(batch, most, features[0].shape[1])
    padded_boxes = torch.zeros(batch, most, 4)
    mask = torch.zeros(batch, most, dtype=torch.long)
    for index, (image_features, image_boxes) in enumerate(zip(features, boxes)):
        count = len(image_features)
        padded[index, :count] = torch.as_tensor(np.asarray(image_features, dtype=np.float32))
        padded_boxes[index, :count] = torch.as_tensor(np.asarray(image_boxes, dtype=np.float32))
        mask[index, :count] = 1
    return {"visual_features": padded, "visual_boxes": padded_boxes, "region_mask": mask}


@dataclass
class DataCollatorForImageText:
    """
    Rows with one image (`image`, `boxes`, `text`) -> the joint sequence `[CLS] text [SEP] regions [SEP]` exactly as
    the processor makes it (`input_ids`, `attention_mask`, `token_type_ids` (B, L), flat `visual_features` (N, D) and
    `visual_boxes` (N, 4) in placeholder order), for `VLMixerForQuestionAnswering` and
    `VLMixerForSequenceClassification`. Labels:

    - with `answer_to_id` (VQA): soft scores (B, num_answers) from the rows' `answers` / `scores` (answers outside the
      vocabulary are dropped, as VQA does);
    - otherwise the class id in `label_column` (B,), when the rows have it.
    """

    processor: VLMixerProcessor
    max_length: int = 64
    answer_to_id: dict | None = None
    label_column: str = "label"

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = dict(self.processor(**joint_inputs(rows), max_length=self.max_length))
        batch.update(self.labels(rows))
        return batch

    def labels(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if self.answer_to_id is not None:
            return {"labels": soft_score_labels(rows, self.answer_to_id)}
        if rows and self.label_column in rows[0]:
            return {"labels": torch.tensor([int(row[self.label_column]) for row in rows], dtype=torch.long)}
        return {}


def soft_score_labels(rows: list[dict], answer_to_id: dict) -> torch.Tensor:
    """(B, num_answers) VQA targets: each row's `scores` placed at its `answers`' ids (unknown answers dropped)."""
    labels = torch.zeros(len(rows), len(answer_to_id))
    for index, row in enumerate(rows):
        for answer, score in zip(row["answers"], row["scores"]):
            if answer in answer_to_id:
                labels[index, answer_to_id[answer]] = max(float(score), float(labels[index, answer_to_id[answer]]))
    return labels


@dataclass
class DataCollatorForVisualReasoning:
    """
    Rows with two images (`image_left`, `boxes_left`, `image_right`, `boxes_right`, `text`, `label`) ->
    `VLMixerForVisualReasoning` inputs: the statement with each image, `input_ids` / `attention_mask` /
    `token_type_ids` (B, 2, L) (left image first), flat `visual_features` (N, D) / `visual_boxes` (N, 4) in the order
    of `input_ids.view(2 * B, L)`, and `labels` (B,) class ids (when the rows have `label_column`).
    """

    processor: VLMixerProcessor
    max_length: int = 64
    label_column: str = "label"

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        encoded = dict(self.processor(**joint_inputs(rows), max_length=self.max_length))
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            encoded[name] = encoded[name].view(len(rows), 2, -1)
        if rows and self.label_column in rows[0]:
            encoded["labels"] = torch.tensor([int(row[self.label_column]) for row in rows], dtype=torch.long)
        return encoded


@dataclass
class DataCollatorForRegionsAndText:
    """
    Rows with one image and a text -> text rows `[CLS] text [SEP]` (`input_ids`, `attention_mask` (B, L), the
    processor's `processor(text=..., cmc_ratio=0.0)`) and the images padded, one row of regions each
    (`visual_features` (B, R, D), `visual_boxes` (B, R, 4), `region_mask` (B, R)): the input format of
    `VLMixerForImageTextRetrieval` and `VLMixerForCaptioning`.

    - `return_loss=True` (retrieval training): the batch asks for the matched-pair loss (contrast + hard-negative
      matching);
    - `caption_labels=True` (captioning): `labels` = `input_ids` with -100 at padding.
    With `text_column=None` (or rows without that column) the batch holds the images alone (for generation).
    """

    processor: VLMixerProcessor
    max_length: int = 64
    text_column: str | None = "text"
    return_loss: bool = False
    caption_labels: bool = False

    def __call__(self, rows: list[dict]) -> dict:
        batch = pad_regions([row_regions(row) for row in rows], [row["boxes"] for row in rows])
        if self.text_column is not None and rows and self.text_column in rows[0]:
            text = self.processor(text=[row[self.text_column] for row in rows], cmc_ratio=0.0,
                                  max_length=self.max_length)  # fmt: skip
            batch["input_ids"], batch["attention_mask"] = text["input_ids"], text["attention_mask"]
            if self.caption_labels:
                batch["labels"] = text["input_ids"].masked_fill(text["attention_mask"] == 0, IGNORE_INDEX)
        if self.return_loss:
            batch["return_loss"] = True
        return batch


__all__ += [
    "DataCollatorForImageText",
    "DataCollatorForRegionsAndText",
    "DataCollatorForVisualReasoning",
    "pad_regions",
    "row_regions",
    "soft_score_labels",
]
