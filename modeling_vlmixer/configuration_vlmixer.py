"""VLMixer model configuration."""

from typing import ClassVar

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


VISION_BACKBONES = ("efficientnet-lite0", "auto", "precomputed")
EFFICIENTNET_LITE0_FEATURE_DIM = 1280

# The two shapes the package is released in: `vlmixer-base` is the paper's BERT-base encoder,
# `vlmixer-small` is the shape of all-MiniLM-L6-v2, whose real weights install offline.
PRESETS = {
    "vlmixer-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "vlmixer-small": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536},
}


@strict
class VLMixerConfig(PreTrainedConfig):
    r"""
    Configuration of a VLMixer model: a single-stream BERT-style encoder over one sequence that interleaves word
    tokens and visual tokens (image regions or patches pasted into a sentence by cross-modal CutMix).

    Text settings follow [`BertConfig`]. Visual settings:

    visual_feature_dim (`int`): size of one region feature produced by the visual backbone (1280 for EfficientNet-Lite0).
    visual_box_dim (`int`): size of the box geometry fed to the model, 4 (x1, y1, x2, y2) or 6 (plus width, height).
    image_token_id (`int`): the placeholder token id where a visual token goes (`[unused0]`, id 1, in BERT's vocabulary).
    cls_token_id, sep_token_id (`int`): `[CLS]` and `[SEP]` (101 and 102 in BERT's vocabulary). The model writes
        them itself where it builds sequences: an image alone (`[CLS] regions [SEP]`), a caption with an image for
        image-text matching, the start and the end of a generated caption.
    vision_backbone (`str`): which module turns `pixel_values` into features: `"efficientnet-lite0"` (built in, frozen),
        `"auto"` (any vision model `transformers.AutoModel` builds from `vision_config`), or `"precomputed"` (the model
        has no backbone and reads `visual_features` only, e.g. VinVL/BUTD features on disk).
    vision_config (`dict`, *optional*): the config of the `"auto"` backbone (as `AutoConfig.to_dict()` gives it).
    feature_source (`str`, *optional*): a name for precomputed features (for example `"vinvl-x152c4"`), recorded in
        `backbone_id` so that a gallery made by another extractor is refused.
    projection_dim (`int`): size of the contrastive sentence embedding.
    logit_scale_init_value (`float`): initial value of the learnable log inverse temperature (log(1/0.07) as CLIP).
    *_loss_weight (`float`): weights of the pre-training losses in their sum (see `VLMixerForPreTraining`).
        `paired_contrastive_loss_weight` and `paired_matching_loss_weight` also weigh the two losses of
        `VLMixerForImageTextRetrieval` fine-tuned on matched pairs.
    momentum_queue_size (`int`): 0 (the default) contrasts the two views of a sentence within the global batch only;
        more keeps a momentum encoder and a queue of that many past sentence embeddings per view as extra negatives of
        the text stream's contrastive loss (MoCo / ALBEF), for small batches.
    momentum_coefficient (`float`): how slowly the momentum encoder follows the encoder (its weight in the moving
        average, 0.995 as ALBEF); used only with a queue.
    classifier_dropout (`float`, *optional*): dropout before the classifiers of the downstream heads (question
        answering, visual reasoning, sequence classification); `hidden_dropout_prob` when unset, as in BERT.
    num_labels, id2label, label2id, problem_type: the classes of the downstream heads, as in BERT (the answer
        vocabulary of `VLMixerForQuestionAnswering`).

    Example:

    ```python
    >>> from modeling_vlmixer import VLMixerConfig, VLMixerModel
    >>> config = VLMixerConfig.from_preset("vlmixer-small")
    >>> model = VLMixerModel(config)
    ```
    """

    model_type = "vlmixer"
    # VLMixer reuses BERT's layers as a bidirectional encoder; these are what those layers ask of a config.
    is_decoder: ClassVar[bool] = False
    add_cross_attention: ClassVar[bool] = False

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    # As BERT: declared (generation reads them), unset. Captioning starts with `cls_token_id` and ends with
    # `sep_token_id` unless these are set.
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    tie_word_embeddings: bool = True
    classifier_dropout: float | int | None = None

    visual_feature_dim: int = EFFICIENTNET_LITE0_FEATURE_DIM
    visual_box_dim: int = 6
    image_token_id: int = 1
    cls_token_id: int = 101
    sep_token_id: int = 102
    vision_backbone: str = "efficientnet-lite0"
    vision_config: dict | None = None
    feature_source: str | None = None

    projection_dim: int = 256
    logit_scale_init_value: float | int = 2.6592
    mlm_loss_weight: float | int = 1.0
    patch_word_loss_weight: float | int = 1.0
    contrastive_loss_weight: float | int = 1.0
    patch_alignment_loss_weight: float | int = 1.0
    tag_mlm_loss_weight: float | int = 1.0
    paired_mlm_loss_weight: float | int = 1.0
    paired_contrastive_loss_weight: float | int = 1.0
    paired_matching_loss_weight: float | int = 1.0
    momentum_queue_size: int = 0
    momentum_coefficient: float | int = 0.995

    def __post_init__(self, **kwargs):
        # `@strict` wraps validator errors in its own exception type; check first so users get a plain ValueError.
        self.validate_architecture()
        super().__post_init__(**kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "VLMixerConfig":
        """The config of a released shape (`"vlmixer-base"` or `"vlmixer-small"`), with overrides."""
        if name not in PRESETS:
            raise ValueError(f"Unknown VLMixer preset {name!r}; choose one of {sorted(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def text_config(self) -> "VLMixerConfig":
        """The text side of the model. VLMixer is one single-stream encoder, so this is the config itself (a view, as
        `get_text_config()` returns it); code written for two-tower models (`config.text_config.vocab_size`) works."""
        return self

    @property
    def backbone_id(self) -> str:
        """Names the features this model reads; a patch gallery records the same string and must match it."""
        if self.vision_backbone == "auto":
            return "auto:" + str(self.vision_config.get("_name_or_path") or self.vision_config["model_type"])
        if self.vision_backbone == "precomputed":
            return f"precomputed:{self.feature_source or f'dim{self.visual_feature_dim}'}"
        return self.vision_backbone

    def validate_architecture(self):
        """Part of `@strict` validation: refuse settings that would build a broken model."""
        super().validate_architecture()
        for name in (
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "max_position_embeddings", "type_vocab_size", "visual_feature_dim", "projection_dim",
        ):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        for name in [field for field in self.__dataclass_fields__ if field.endswith("_loss_weight")]:
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        if self.momentum_queue_size < 0:
            raise ValueError(
                f"`momentum_queue_size` must be >= 0 (0 turns the queue off), got {self.momentum_queue_size}."
            )
        if not 0 <= self.momentum_coefficient < 1:
            raise ValueError(f"`momentum_coefficient` must be in [0, 1), got {self.momentum_coefficient}.")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            if getattr(self, name) is not None and not 0 <= getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be in [0, 1), got {getattr(self, name)}.")
        if self.visual_box_dim not in (4, 6):
            raise ValueError(
                f"`visual_box_dim` must be 4 (x1, y1, x2, y2) or 6 (plus w, h), got {self.visual_box_dim}."
            )
        for name in ("image_token_id", "cls_token_id", "sep_token_id", "pad_token_id", "bos_token_id", "eos_token_id"):
            values = getattr(self, name)
            for value in values if isinstance(values, list) else [values]:
                if value is not None and not 0 <= value < self.vocab_size:
                    raise ValueError(f"`{name}` ({value}) must lie in the vocabulary [0, {self.vocab_size}).")
        for name in ("image_token_id", "cls_token_id", "sep_token_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(
                    f"`{name}` ({getattr(self, name)}) must lie in the vocabulary [0, {self.vocab_size})."
                )
        if len({self.image_token_id, self.cls_token_id, self.sep_token_id}) < 3:
            raise ValueError("`image_token_id`, `cls_token_id` and `sep_token_id` must be three different tokens.")
        self._validate_vision_backbone()

    def _validate_vision_backbone(self):
        if self.vision_backbone not in VISION_BACKBONES:
            raise ValueError(
                f"Unknown `vision_backbone` {self.vision_backbone!r}; choose one of {list(VISION_BACKBONES)} "
                "(use 'auto' with a `vision_config` for any transformers vision model)."
            )
        if self.vision_backbone == "efficientnet-lite0" and self.visual_feature_dim != EFFICIENTNET_LITE0_FEATURE_DIM:
            raise ValueError(
                f"EfficientNet-Lite0 features have {EFFICIENTNET_LITE0_FEATURE_DIM} dimensions, but "
                f"`visual_feature_dim` is {self.visual_feature_dim}."
            )
        if self.vision_backbone == "auto":
            if not self.vision_config or "model_type" not in self.vision_config:
                raise ValueError("`vision_backbone='auto'` needs a `vision_config` dict with a `model_type`.")
            width = self.vision_config.get("hidden_size") or (self.vision_config.get("hidden_sizes") or [None])[-1]
            if width is not None and width != self.visual_feature_dim:
                raise ValueError(
                    f"The {self.vision_config['model_type']} backbone outputs {width}-d features, but "
                    f"`visual_feature_dim` is {self.visual_feature_dim}."
                )
        elif self.vision_config is not None:
            raise ValueError(
                f"`vision_config` is only used with `vision_backbone='auto'`, not {self.vision_backbone!r}."
            )


__all__ = ["VLMixerConfig", "PRESETS", "VISION_BACKBONES"]
