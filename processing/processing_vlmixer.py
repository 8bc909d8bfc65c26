"""VLMixerProcessor: cross-modal CutMix (CMC) for text-only sentences, and image-text encoding for paired inputs.

CMC finds the visually grounded words of a sentence (a `ConceptVocabulary`) and replaces each, with probability
`cmc_ratio`, by one visual token: a patch feature drawn from that concept's rows of a `PatchGallery`. All word pieces
of a replaced word become one placeholder (`image_token_id`), which keeps the position id of its first word piece,
so the mixed and the original view of a sentence share positions.
"""

import json
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, Unpack

import numpy as np
import torch
from transformers import BatchFeature
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin
from transformers.utils import PROCESSOR_NAME as PROCESSOR_CONFIG_NAME
from transformers.utils import cached_file

from .concepts import ConceptVocabulary
from .gallery import GALLERY_CONFIG_NAME, GALLERY_WEIGHTS_NAME, PatchGallery


CONCEPTS_NAME = "concepts.json"
IMAGE_MARKER = "<image>"  # in a text given with regions, where each region's visual token goes
IGNORE_INDEX = -100
WHOLE_IMAGE_BOX = (0.0, 0.0, 1.0, 1.0)
# The longest sequence when neither the call (`max_length`) nor the processor (`max_position_embeddings`) says: BERT's
# position table. A tokenizer saved without `model_max_length` reports 1e30, which no tokenizer can truncate to.
DEFAULT_MAX_LENGTH = 512


class VLMixerProcessorKwargs(ProcessingKwargs, total=False):
    """
    Call-time options of [`VLMixerProcessor`], beside the tokenizer's (`text_kwargs`: `max_length`, `return_tensors`,
    ...) and the image processor's (`images_kwargs`):

    cmc_ratio (`float`): probability of replacing each grounded word by a patch (the processor's `cmc_ratio` when
        not given).
    seed (`int`), generator (numpy or torch `Generator`): the random source of cross-modal CutMix.
    rejected_spans (`list[list[[start, end]]]`): per sentence, the character spans of grounded words that a sense
        model found used in another sense ("a movie star"); they are never mixed (`processing.sense`).
    """

    cmc_ratio: float | int
    seed: int | None
    generator: Any
    rejected_spans: list | None


@dataclass
class MixedSentence:
    """One sentence's two views as token lists, before padding."""

    original_ids: list[int]
    mixed_ids: list[int]
    mixed_positions: list[int]
    patch_slots: list[int]  # index of each placeholder in `mixed_ids`
    replaced_ids: list[int]  # first word piece of the word each placeholder replaced


def efficientnet_image_processor(image_size: int = 224):
    """The crop preprocessing of EfficientNet-Lite0's ImageNet weights: bicubic resize of the shortest edge to
    image_size / 0.875, centre crop, RGB scaled to [-1, 1]."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return CLIPImageProcessorPil(
        size={"shortest_edge": round(image_size / 0.875)},
        crop_size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        resample=3,  # bicubic
    )


def as_numpy_generator(seed: int | None, generator) -> np.random.Generator:
    """One random source for CMC: a numpy Generator, a torch.Generator (seeds a numpy one), a seed, or fresh entropy."""
    if generator is not None and seed is not None:
        raise ValueError("Pass either `seed` or `generator`, not both.")
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, torch.Generator):
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    if generator is not None:
        raise TypeError(f"`generator` must be a numpy or torch Generator, got {type(generator).__name__}.")
    return np.random.default_rng(seed)


def rejected_span_sets(rejected_spans: list | None, count: int) -> list[set[tuple[int, int]]]:
    """Per sentence, the (start, end) spans the sense check rejected (empty sets when none were given)."""
    if rejected_spans is None:
        return [set() for _ in range(count)]
    if len(rejected_spans) != count:
        raise ValueError(f"`rejected_spans` has {len(rejected_spans)} entries for {count} sentences.")
    return [{tuple(span) for span in spans} for spans in rejected_spans]


def mix_sentence(ids: list[int], replacements: list[tuple[int, int]], image_token_id: int) -> MixedSentence:
    """Replaces each token range [first, last) in `replacements` (sorted, disjoint) by one placeholder."""
    mixed_ids, mixed_positions, patch_slots, replaced_ids = [], [], [], []
    cursor = 0
    for first, last in replacements:
        mixed_ids += ids[cursor:first]
        mixed_positions += range(cursor, first)
        patch_slots.append(len(mixed_ids))
        replaced_ids.append(ids[first])
        mixed_ids.append(image_token_id)
        mixed_positions.append(first)
        cursor = last
    mixed_ids += ids[cursor:]
    mixed_positions += range(cursor, len(ids))
    return MixedSentence(ids, mixed_ids, mixed_positions, patch_slots, replaced_ids)


def pad_rows(rows: list[list[int]], pad_value: int, length: int | None = None) -> np.ndarray:
    """Right-pads integer rows to one (B, length) int64 array; `length` defaults to the longest row."""
    length = max(map(len, rows)) if length is None else length
    padded = np.full((len(rows), length), pad_value, dtype=np.int64)
    for row, values in zip(padded, rows):
        row[: len(values)] = values
    return padded


def attention_mask_for(rows: list[list[int]], length: int) -> np.ndarray:
    """(B, length) with 1 on the tokens of each row and 0 on its padding."""
    return (np.arange(length)[None, :] < np.array([len(r) for r in rows])[:, None]).astype(np.int64)


def grid_boxes(grid_size: int) -> list[tuple[float, float, float, float]]:
    """The whole image followed by a grid_size x grid_size tiling, row-major, as normalised boxes."""
    step = 1.0 / grid_size
    tiles = [
        (col * step, row * step, (col + 1) * step, (row + 1) * step) for row in range(grid_size) for col in range(grid_size)
    ]
    return [WHOLE_IMAGE_BOX] + tiles


def crop_region(image, box) -> "PIL.Image.Image":
    """Crops a normalised (x1, y1, x2, y2) box out of a PIL image, at least one pixel wide and high."""
    width, height = image.size
    left, top = int(box[0] * width), int(box[1] * height)
    right, bottom = max(int(round(box[2] * width)), left + 1), max(int(round(box[3] * height)), top + 1)
    return image.crop((left, top, right, bottom))


def to_rgb_image(image) -> "PIL.Image.Image":
    """
    A PIL RGB image from a PIL image or an (H, W) / (H, W, 3|4) array; refuses anything else clearly. Values are
    scaled by their true depth: uint8 (and 8-bit modes) as they are, 16-bit (uint16 arrays, modes I;16*, mode I of a
    PNG or with values above 255) by 65535, floats (arrays, mode F) from [0, 1]; other integers must lie in
    [0, 255]. Values outside the range of their depth, and NaN, are refused rather than clipped.
    """
    from PIL import Image

    def to_uint8(values: np.ndarray, what: str) -> np.ndarray:
        if values.dtype == np.bool_:
            return values.astype(np.uint8) * 255
        if values.dtype.kind == "f":
            if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
                raise ValueError(f"A float image ({what}) must hold finite values in [0, 1], got "
                                 f"[{values.min()}, {values.max()}]; scale it to [0, 1] or pass uint8.")  # fmt: skip
            return np.rint(values.astype(np.float64) * 255).astype(np.uint8)
        if values.dtype.kind not in "iu":
            raise TypeError(f"An image ({what}) must hold integers or floats, got {values.dtype}.")
        # mode I is 16-bit PNG's in older Pillow; from another source it may hold 8-bit values
        sixteen = values.dtype == np.uint16 or what.startswith("mode I;16") or what == "mode I (PNG)"
        depth = 65535 if sixteen or (what.startswith("mode I") and values.max() > 255) else 255
        if values.min() < 0 or values.max() > depth:
            raise ValueError(f"{'A 16' if depth == 65535 else 'An 8'}-bit image ({what}) must hold values in [0, {depth}], "
                             f"got [{values.min()}, {values.max()}].")  # fmt: skip
        return np.rint(values * (255 / depth)).astype(np.uint8) if depth != 255 else values.astype(np.uint8)

    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3) or image.size == 0 or (image.ndim == 3 and image.shape[2] not in (1, 2, 3, 4)):
            raise ValueError(f"An image array must be (H, W) or (H, W, 1-4) and non-empty, got shape {image.shape}.")
        image = Image.fromarray(to_uint8(image if image.ndim == 2 or image.shape[2] != 1 else image[..., 0],
                                         f"{image.dtype} array"))  # fmt: skip
    if not isinstance(image, Image.Image):
        raise TypeError(f"Images must be PIL images or numpy arrays, got {type(image).__name__}.")
    if image.width == 0 or image.height == 0:
        raise ValueError(f"Image has a zero-size dimension: {image.size}.")
    if image.mode.startswith("I") or image.mode == "F":  # 16/32-bit integer or float pixels: convert() would clip
        png = " (PNG)" if image.mode == "I" and image.format == "PNG" else ""
        image = Image.fromarray(to_uint8(np.asarray(image), f"mode {image.mode}{png}"))
    return image.convert("RGB")


class VLMixerProcessor(ProcessorMixin):
    r"""
    Turns sentences into VLMixer inputs.

    - `processor(text=sentences, cmc_ratio=0.5, seed=0)`: cross-modal CutMix. Returns the mixed view (`input_ids`,
      `attention_mask`, `position_ids`, `visual_features` and `visual_boxes` in placeholder order, `patch_word_labels`
      holding at each placeholder the first word piece of the word it replaced), the original view
      (`original_input_ids`, `original_attention_mask`), and `patch_concept_ids` / `patch_gallery_indices` (N,).
    - `processor(text=captions, images=images, boxes=None)`: image-text pairs, `[CLS] text [SEP] regions [SEP]`, with
      the regions as `pixel_values` crops (the boxes you pass, or the whole image plus a `grid_size` grid) and
      `visual_boxes`; token type 1 marks the regions. `region_features=` gives precomputed region features instead.
    - A text with `<image>` markers ("a photo of a <image>.") puts each region's visual token at its marker instead.

    Args:
        tokenizer: a fast BERT word-piece tokenizer.
        image_processor: turns region crops into `pixel_values` for the model's backbone; by default the built-in
            EfficientNet-Lite0's 224 px crops (text-only use never calls it).
        cmc_ratio (`float`): default probability of replacing each grounded word.
        grid_size (`int`): grid of regions used for an image given without boxes.
        backbone_id (`str`, *optional*): the features the model reads (`config.backbone_id`); a gallery made by
            another backbone is refused.
        concepts (`ConceptVocabulary` or `dict`, *optional*): the grounded-word vocabulary.
        gallery (`PatchGallery`, *optional*): the patches; needed when `cmc_ratio > 0`.
        max_position_embeddings (`int`, *optional*): the model's; sequences are truncated to it (to the tokenizer's
            `model_max_length`, at most 512, when not given). `max_length=` in a call overrides it.
    """

    # What an image-text call returns (`processor(text=..., images=...)`); `region_features=` returns
    # `visual_features` in place of `pixel_values`, and cross-modal CutMix the two views and their targets.
    model_input_names = ["input_ids", "attention_mask", "token_type_ids", "visual_boxes", "pixel_values"]
    _auto_class = "AutoProcessor"
    valid_processor_kwargs = VLMixerProcessorKwargs
    text_kwargs = {"return_tensors": "pt"}  # the processor's outputs are always tensors unless asked otherwise

    def __init__(
        self,
        tokenizer=None,
        image_processor=None,
        cmc_ratio: float = 0.5,
        grid_size: int = 2,
        backbone_id: str | None = None,
        concepts=None,
        gallery: PatchGallery | None = None,
        max_position_embeddings: int | None = None,
    ):
        # Text-only use needs no image processor; ProcessorMixin needs one: the built-in backbone's default crops.
        super().__init__(tokenizer, image_processor if image_processor is not None else efficientnet_image_processor())
        if not 0.0 <= cmc_ratio <= 1.0:
            raise ValueError(f"`cmc_ratio` must be in [0, 1], got {cmc_ratio}.")
        if grid_size < 1:
            raise ValueError(f"`grid_size` must be at least 1, got {grid_size}.")
        if max_position_embeddings is not None and max_position_embeddings < 3:
            raise ValueError(f"`max_position_embeddings` must be at least 3, got {max_position_embeddings}.")
        self.cmc_ratio = cmc_ratio
        self.grid_size = grid_size
        self.backbone_id = backbone_id
        self.max_position_embeddings = max_position_embeddings
        # Not named like __init__ parameters, so that `processor_config.json` never holds them.
        self.vocabulary = ConceptVocabulary(concepts) if isinstance(concepts, dict) else concepts
        self.patch_gallery = None
        if gallery is not None:
            self.set_gallery(gallery)

    @property
    def image_token_id(self) -> int:
        """The placeholder id, `[unused0]` in BERT's vocabulary; must equal the model's `config.image_token_id`."""
        return self.tokenizer.convert_tokens_to_ids("[unused0]")

    def set_gallery(self, gallery: PatchGallery) -> None:
        """Attaches a gallery after checking that it was made by the model's backbone."""
        if self.backbone_id is not None and gallery.backbone != self.backbone_id:
            raise ValueError(
                f"The gallery was built with backbone {gallery.backbone!r} but the model reads {self.backbone_id!r} "
                "features; rebuild the gallery with the model's backbone."
            )
        self.patch_gallery = gallery

    # ------------------------------------------------------------------------------------------ calling

    @property
    def max_length(self) -> int:
        """The longest sequence a call makes by default: the model's `max_position_embeddings` when the processor was
        given it, else the tokenizer's `model_max_length` when that is a real limit, at most 512."""
        if self.max_position_embeddings is not None:
            return self.max_position_embeddings
        return min(int(getattr(self.tokenizer, "model_max_length", None) or DEFAULT_MAX_LENGTH), DEFAULT_MAX_LENGTH)

    def __call__(
        self,
        text: str | list[str] | None = None,
        images: Any = None,
        boxes: Any = None,
        region_features: Any = None,
        **kwargs: Unpack[VLMixerProcessorKwargs],
    ) -> BatchFeature:
        r"""
        text (`str` or `list[str]`): the sentences (captions, questions, prompts with `<image>` markers).
        images (PIL images or arrays, one per text), region_features (a `(R, D)` array per text), boxes (a `(R, 4)`
            list of normalised boxes per image): the images of image-text pairs.
        kwargs: [`VLMixerProcessorKwargs`]: `cmc_ratio`, `seed`, `generator`, the tokenizer's `max_length` and
            `return_tensors` (`"pt"` by default, or `"np"`), the image processor's options.
        """
        merged = self._merge_kwargs(
            VLMixerProcessorKwargs, tokenizer_init_kwargs=getattr(self.tokenizer, "init_kwargs", {}), **kwargs
        )
        text_kwargs = merged["text_kwargs"]
        return_tensors = text_kwargs.get("return_tensors") or "pt"
        if return_tensors not in ("pt", "np"):
            raise ValueError(f"`return_tensors` must be 'pt' or 'np', got {return_tensors!r}.")
        sentences = self._as_sentences(text)
        max_length = text_kwargs.get("max_length") or self.max_length
        if self.max_position_embeddings is not None:  # a tokenizer default (MiniLM's says 128) never exceeds the model
            max_length = min(max_length, self.max_position_embeddings)
        if images is not None or region_features is not None:
            encoded = self.encode_image_text(
                sentences, images, boxes, region_features, max_length, merged["images_kwargs"]
            )
        else:
            if boxes is not None:
                raise ValueError("`boxes` are regions of `images` or `region_features`; pass those too.")
            ratio = merged.get("cmc_ratio", self.cmc_ratio)
            # the caller's own generator, not the copy that _merge_kwargs makes: it must advance from call to call
            rng = as_numpy_generator(merged.get("seed"), kwargs.get("generator", merged.get("generator")))
            encoded = self.cross_modal_cutmix(sentences, ratio, rng, max_length, merged.get("rejected_spans"))
        if text_kwargs.get("padding") == "max_length":
            encoded = self._pad_to_length(encoded, max_length)
        return BatchFeature(encoded, tensor_type=return_tensors)

    def _pad_to_length(self, encoded: dict, length: int) -> dict:
        """`padding="max_length"`: every per-token row (both views of CutMix) padded at the end to `length`."""
        pad_values = {
            "input_ids": self.tokenizer.pad_token_id, "original_input_ids": self.tokenizer.pad_token_id,
            "attention_mask": 0, "original_attention_mask": 0, "token_type_ids": 0, "position_ids": 0,
            "patch_word_labels": IGNORE_INDEX,
        }  # fmt: skip
        padded = dict(encoded)
        for name, value in pad_values.items():
            if name in padded and padded[name].shape[1] < length:
                extra = np.full((len(padded[name]), length - padded[name].shape[1]), value, dtype=padded[name].dtype)
                padded[name] = np.concatenate([padded[name], extra], axis=1)
        return padded

    @staticmethod
    def _as_sentences(text) -> list[str]:
        if text is None:
            raise ValueError("`text` is required: a sentence or a list of sentences.")
        sentences = [text] if isinstance(text, str) else list(text)
        if not sentences:
            raise ValueError("`text` is an empty list.")
        for index, sentence in enumerate(sentences):
            if not isinstance(sentence, str):
                raise TypeError(f"text[{index}] is a {type(sentence).__name__}, not a string.")
            if not sentence.strip():
                raise ValueError(f"text[{index}] is empty; every sentence needs at least one word.")
        return sentences

    def _tokenize(self, sentences: list[str], max_length: int):
        return self.tokenizer(sentences, truncation=True, max_length=max_length, return_attention_mask=False).encodings

    def cross_modal_cutmix(self, sentences: list[str], cmc_ratio: float, rng: np.random.Generator, max_length: int,
                           rejected_spans: list | None = None):  # fmt: skip
        """Both views of each sentence, with grounded words replaced by gallery patches with probability `cmc_ratio`,
        except the words at `rejected_spans` (per sentence, [start, end] character spans)."""
        if not 0.0 <= cmc_ratio <= 1.0:
            raise ValueError(f"`cmc_ratio` must be in [0, 1], got {cmc_ratio}.")
        if cmc_ratio > 0 and (self.vocabulary is None or self.patch_gallery is None):
            raise ValueError(
                "Cross-modal CutMix needs a concept vocabulary and a patch gallery; pass `concepts=` and `gallery=` "
                "(or call with cmc_ratio=0 for the original sentences only)."
            )
        encodings = self._tokenize(sentences, max_length)
        rejected = rejected_span_sets(rejected_spans, len(sentences))
        candidates = self._grounded_token_spans(sentences, encodings, rejected) if cmc_ratio > 0 else [[] for _ in sentences]
        chosen = self._choose_replacements(candidates, cmc_ratio, rng)
        image_token_id = self.image_token_id
        mixed = [
            mix_sentence(encoding.ids, [(first, last) for first, last, _ in picks], image_token_id)
            for encoding, picks in zip(encodings, chosen)
        ]
        concepts = [concept for picks in chosen for _, _, concept in picks]
        return self._cmc_arrays(mixed, concepts, rng)

    def _grounded_token_spans(self, sentences: list[str], encodings, rejected: list[set]) -> list[list[tuple[int, int, str]]]:
        """Per sentence, the token ranges [first, last) of grounded words whose concept has gallery patches and whose
        (start, end) is not in that sentence's `rejected` set."""
        gallery = self.patch_gallery
        spans = []
        for sentence, encoding, rejected_here in zip(sentences, encodings, rejected):
            sentence_spans = []
            for match in self.vocabulary.find(sentence):
                if match.concept not in gallery or (match.start, match.end) in rejected_here:
                    continue
                first = encoding.char_to_token(match.start)
                last = encoding.char_to_token(match.end - 1)
                if first is None or last is None:  # cut away by truncation
                    continue
                sentence_spans.append((first, last + 1, match.concept))
            spans.append(sentence_spans)
        return spans

    def grounding_report(self, text: str | list[str], rejected_spans: list | None = None) -> dict:
        """
        What cross-modal CutMix finds in `text` before any draw: the sentences it can mix (a word of a gallery
        concept), the words kept per concept, and the spelling matches the sense check rejected, by reason (the
        matcher's rules: "verb", "name", "modifier", ...; "context model": the words at `rejected_spans`).
        """
        sentences = self._as_sentences(text)
        if self.vocabulary is None:
            raise ValueError("A grounding report needs the processor's concept vocabulary (`concepts=`).")
        gallery, kept, rejected, mixable = self.patch_gallery, Counter(), [], 0
        for sentence, by_model in zip(sentences, rejected_span_sets(rejected_spans, len(sentences))):
            matches = self.vocabulary.find(sentence, rejected)
            rejected += [(m.start, m.end, "context model") for m in matches if (m.start, m.end) in by_model]
            concepts = [m.concept for m in matches if (m.start, m.end) not in by_model]
            kept.update(concepts)
            mixable += any(gallery is None or concept in gallery for concept in concepts)
        return {"sentences": len(sentences), "mixable_sentences": mixable, "kept": sum(kept.values()),
                "kept_per_concept": dict(kept), "rejected": len(rejected),
                "rejected_by_reason": dict(Counter(reason for *_, reason in rejected))}  # fmt: skip

    @staticmethod
    def _choose_replacements(candidates, cmc_ratio: float, rng: np.random.Generator):
        """Keeps each candidate with probability `cmc_ratio`, drawing one uniform number per candidate in order."""
        draws = iter(rng.random(sum(map(len, candidates))) < cmc_ratio)
        return [[span for span in spans if next(draws)] for spans in candidates]

    def _cmc_arrays(self, mixed: list[MixedSentence], concepts: list[str], rng: np.random.Generator) -> dict:
        pad_id = self.tokenizer.pad_token_id
        mixed_rows = [m.mixed_ids for m in mixed]
        original_rows = [m.original_ids for m in mixed]
        mixed_length, original_length = max(map(len, mixed_rows)), max(map(len, original_rows))
        patch_word_labels = np.full((len(mixed), mixed_length), IGNORE_INDEX, dtype=np.int64)
        for row, sentence in zip(patch_word_labels, mixed):
            row[sentence.patch_slots] = sentence.replaced_ids
        arrays = {
            "input_ids": pad_rows(mixed_rows, pad_id, mixed_length),
            "attention_mask": attention_mask_for(mixed_rows, mixed_length),
            "position_ids": pad_rows([m.mixed_positions for m in mixed], 0, mixed_length),
            "patch_word_labels": patch_word_labels,
            "original_input_ids": pad_rows(original_rows, pad_id, original_length),
            "original_attention_mask": attention_mask_for(original_rows, original_length),
        }
        arrays.update(self._patches_for(concepts, rng))
        return arrays

    def _patches_for(self, concepts: list[str], rng: np.random.Generator) -> dict:
        """visual_features (N, D), visual_boxes (N, 4), and which concept and gallery row each patch is."""
        if not concepts:
            feature_dim = self.patch_gallery.feature_dim if self.patch_gallery is not None else 0
            return {
                "visual_features": np.zeros((0, feature_dim), dtype=np.float32),
                "visual_boxes": np.zeros((0, 4), dtype=np.float32),
                "patch_concept_ids": np.zeros(0, dtype=np.int64),
                "patch_gallery_indices": np.zeros(0, dtype=np.int64),
            }
        indices = self.patch_gallery.sample(concepts, rng)
        label_index = self.vocabulary.label_index
        return {
            "visual_features": self.patch_gallery.features_at(indices),
            "visual_boxes": self.patch_gallery.boxes_at(indices),
            "patch_concept_ids": np.array([label_index[c] for c in concepts], dtype=np.int64),
            "patch_gallery_indices": indices,
        }

    def encode_image_text(
        self, sentences: list[str], images, boxes, region_features, max_length: int, images_kwargs: dict | None = None
    ) -> dict:
        """
        `[CLS] text [SEP] regions [SEP]` per pair. The regions are crops of `images` (as `pixel_values` (N, 3, S, S)
        for the model's backbone) or rows of precomputed `region_features` (a (R, D) array per text, as
        `visual_features` (N, D)); their boxes are `boxes`, by default the whole image plus a grid (for images) or
        the whole image (for a single feature row).
        """
        if images is not None and region_features is not None:
            raise ValueError("Pass either `images` or `region_features`, not both.")
        sources = images if images is not None else region_features
        sources = [sources] if not isinstance(sources, (list, tuple)) else list(sources)
        kind = "images" if images is not None else "region_features"
        if len(sources) != len(sentences):
            raise ValueError(f"Got {len(sentences)} texts but {len(sources)} {kind}; pass one per text.")
        if images is not None and any(isinstance(item, (list, tuple)) for item in sources):
            # The nested form of multimodal processors: a list of images per text, regions image after image; an
            # empty list is a text without an image (`[CLS] text [SEP]`).
            if boxes is not None:
                raise ValueError("Pass `boxes` with one image per text, not with a list of images per text.")
            sources = [list(item) if isinstance(item, (list, tuple)) else [item] for item in sources]
            boxes = [grid_boxes(self.grid_size) * len(item) for item in sources]
            sources = [[image for image in item for _ in grid_boxes(self.grid_size)] for item in sources]
        if images is None:
            sources = [self._checked_features(features, index) for index, features in enumerate(sources)]
        if boxes is None:
            boxes = [grid_boxes(self.grid_size) if images is not None else [WHOLE_IMAGE_BOX] * len(f) for f in sources]
        elif len(boxes) != len(sources):
            raise ValueError(f"Got {len(sources)} {kind} but {len(boxes)} box lists; pass one list per item.")
        region_boxes = [
            self._checked_boxes(image_boxes, index) if len(image_boxes) or not isinstance(sources[index], list)
            else np.zeros((0, 4), dtype=np.float32)
            for index, image_boxes in enumerate(boxes)
        ]  # fmt: skip
        if images is None and any(len(f) != len(b) for f, b in zip(sources, region_boxes)):
            raise ValueError("Each `region_features` array needs one box per row.")
        if any(IMAGE_MARKER in sentence for sentence in sentences):
            rows = self._regions_at_markers(sentences, [len(b) for b in region_boxes], max_length)
            token_types = [[0] * len(row) for row in rows]
        else:
            rows, token_types = self._regions_after_text(sentences, region_boxes, max_length)
        length = max(map(len, rows))
        encoded = {
            "input_ids": pad_rows(rows, self.tokenizer.pad_token_id, length),
            "attention_mask": attention_mask_for(rows, length),
            "token_type_ids": pad_rows(token_types, 0, length),
            "visual_boxes": np.concatenate(region_boxes).astype(np.float32),
        }
        if images is None:
            encoded["visual_features"] = np.concatenate(sources)
        else:
            crops = [
                crop_region(to_rgb_image(image), box)
                for image, image_boxes in zip(sources, region_boxes)
                for image, box in (zip(image, image_boxes) if isinstance(image, list) else ((image, b) for b in image_boxes))
            ]  # fmt: skip
            if not crops:
                raise ValueError("None of the texts has an image; call the processor with `text=` alone.")
            images_kwargs = {**(images_kwargs or {}), "return_tensors": "np"}
            encoded["pixel_values"] = self.image_processor(images=crops, **images_kwargs)["pixel_values"]
        return encoded

    @staticmethod
    def _checked_features(features, index: int) -> np.ndarray:
        array = np.asarray(features, dtype=np.float32)
        if array.ndim == 1:
            array = array[None]
        if array.ndim != 2 or len(array) == 0:
            raise ValueError(f"region_features[{index}] must be a non-empty (R, D) array, got shape {array.shape}.")
        if not np.isfinite(array).all():
            raise ValueError(f"region_features[{index}] contains NaN or infinite values.")
        return array

    def _regions_after_text(self, sentences, region_boxes, max_length: int) -> tuple[list[list[int]], list[list[int]]]:
        """`[CLS] text [SEP] regions [SEP]` ids and token types (1 on the regions)."""
        image_token_id, sep_id = self.image_token_id, self.tokenizer.sep_token_id
        rows, token_types = [], []
        for encoding, image_boxes in zip(self._tokenize_leaving_room(sentences, region_boxes, max_length), region_boxes):
            regions = [image_token_id] * len(image_boxes) + [sep_id] if len(image_boxes) else []  # none: text alone
            rows.append(encoding.ids + regions)
            token_types.append([0] * len(encoding.ids) + [1] * len(regions))
        return rows, token_types

    def _regions_at_markers(self, sentences, region_counts: list[int], max_length: int) -> list[list[int]]:
        """`[CLS] a photo of <image> [SEP]`: each `<image>` marker becomes the visual token of the next region."""
        rows = []
        for index, (sentence, count) in enumerate(zip(sentences, region_counts)):
            pieces = sentence.split(IMAGE_MARKER)
            if len(pieces) - 1 != count:
                raise ValueError(f"text[{index}] has {len(pieces) - 1} {IMAGE_MARKER} markers but {count} regions.")
            words = self.tokenizer(pieces, add_special_tokens=False)["input_ids"]
            ids = [self.tokenizer.cls_token_id]
            for position, piece in enumerate(words):
                ids += piece + ([self.image_token_id] if position < count else [])
            ids.append(self.tokenizer.sep_token_id)
            if len(ids) > max_length:
                raise ValueError(f"text[{index}] with its regions needs {len(ids)} tokens, more than max_length={max_length}.")
            rows.append(ids)
        return rows

    def _tokenize_leaving_room(self, sentences, region_boxes, max_length: int):
        """Tokenises each text so that its regions and the closing [SEP] still fit in `max_length`."""
        encodings = []
        for sentence, image_boxes in zip(sentences, region_boxes):
            room = max_length - len(image_boxes) - 1 if len(image_boxes) else max_length
            if room < 3:
                raise ValueError(f"{len(image_boxes)} regions leave no room for text within max_length={max_length}.")
            encodings += self._tokenize([sentence], room)
        return encodings

    @staticmethod
    def _checked_boxes(image_boxes, index: int) -> np.ndarray:
        array = np.asarray(image_boxes, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != 4 or len(array) == 0:
            raise ValueError(f"boxes[{index}] must be a non-empty (R, 4) list of x1, y1, x2, y2, got {array.shape}.")
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ValueError(f"boxes[{index}] must be normalised to [0, 1].")
        if (array[:, 2] <= array[:, 0]).any() or (array[:, 3] <= array[:, 1]).any():
            raise ValueError(f"boxes[{index}] has a box with x2 <= x1 or y2 <= y1.")
        return array

    # ------------------------------------------------------------------------------------------ saving

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Saves the tokenizer, image processor and settings as `ProcessorMixin` does, plus the vocabulary and gallery."""
        os.makedirs(save_directory, exist_ok=True)
        if self.vocabulary is not None:
            self.vocabulary.to_json(os.path.join(save_directory, CONCEPTS_NAME))
        if self.patch_gallery is not None:
            self.patch_gallery.save(save_directory)
        # Saving as remote code writes `auto_map` into the live processor and its sub-processors; it belongs to the
        # folder only, so that the saved processor and the one loaded back have the same `to_dict()`.
        parts = [self] + [getattr(self, name) for name in self.get_attributes() if getattr(self, name, None) is not None]
        without_auto_map = [part for part in parts if "auto_map" not in getattr(part, "__dict__", {"auto_map": 1})]
        try:
            saved = super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        finally:
            for part in without_auto_map:
                part.__dict__.pop("auto_map", None)
        self._drop_nested_auto_maps(os.path.join(save_directory, PROCESSOR_CONFIG_NAME))
        return saved

    def _drop_nested_auto_maps(self, config_file: str) -> None:
        """
        The `auto_map` of `processor_config.json` (top level) is what `AutoProcessor` reads. Remote-code saving also
        writes it into the nested image processor's settings, where it names no class of the image processor and
        comes back as an attribute (`AutoImageProcessor.from_pretrained(folder)` would differ from the one saved).
        """
        if not os.path.isfile(config_file):
            return
        with open(config_file, encoding="utf-8") as handle:
            config = json.load(handle)
        nested = [name for name in self.get_attributes() if isinstance(config.get(name), dict)]
        if not any("auto_map" in config[name] for name in nested):
            return
        for name in nested:
            config[name].pop("auto_map", None)
        with open(config_file, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(config, indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Loads from a folder or the Hub; the vocabulary and gallery come along when the checkpoint has them."""
        processor = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        for name in processor.get_attributes():  # `auto_map` is the folder's, not the processor's (see save_pretrained)
            getattr(getattr(processor, name, None), "__dict__", {}).pop("auto_map", None)
        download = {
            key: kwargs[key]
            for key in ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
            if key in kwargs
        }

        def optional_file(name):
            return cached_file(
                pretrained_model_name_or_path,
                name,
                _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False,
                **download,
            )

        if (concepts_file := optional_file(CONCEPTS_NAME)) is not None:
            processor.vocabulary = ConceptVocabulary.from_json(concepts_file)
        # Either gallery file means a gallery: one without the other is refused by load, naming the missing file.
        found = next(filter(None, map(optional_file, (GALLERY_CONFIG_NAME, GALLERY_WEIGHTS_NAME))), None)
        if found is not None:
            processor.set_gallery(PatchGallery.load(os.path.dirname(found), processor.backbone_id))
        return processor


__all__ = ["VLMixerProcessor", "CONCEPTS_NAME", "efficientnet_image_processor"]
