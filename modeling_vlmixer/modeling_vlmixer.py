"""PyTorch VLMixer: a single-stream BERT encoder over interleaved word tokens and visual tokens.

A visual token is one image region (a patch pasted into a sentence by cross-modal CutMix, or a region of a whole
image appended after the text). In `input_ids` it is the placeholder `config.image_token_id`; its embedding is the
projected region feature plus its box geometry and a modality embedding, scattered into the placeholder's row.

The transformer layers are BERT's own (`transformers.models.bert`), so a VLMixer initialised from a BERT checkpoint
computes exactly what that BERT computes on text without visual tokens.
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from torch.nn import functional as F

from transformers import AutoConfig, AutoModel, BertModel, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.dynamic_module_utils import custom_object_save
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    CausalLMOutput,
    MaskedLMOutput,
    SequenceClassifierOutput,
)
from transformers.models.bert.modeling_bert import (
    BertEmbeddings,
    BertEncoder,
    BertLayer,
    BertLMPredictionHead,
    BertPooler,
    BertSelfAttention,
)
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple, is_torchdynamo_compiling, logging
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_vlmixer import VLMixerConfig
from .efficientnet_lite import EfficientNetLite0, load_imagenet_state_dict


logger = logging.get_logger(__name__)

# Every Auto class a saved folder answers to; `save_pretrained` writes them all into `config.auto_map` so that
# people who never installed this package can load any head with `trust_remote_code=True`. Retrieval and visual
# reasoning have no Auto class in transformers: import `VLMixerForImageTextRetrieval` / `VLMixerForVisualReasoning`
# (or, as remote code, `get_class_from_dynamic_module("modeling_vlmixer.VLMixerForImageTextRetrieval", folder)`).
AUTO_MAP = {
    "AutoConfig": "configuration_vlmixer.VLMixerConfig",
    "AutoModel": "modeling_vlmixer.VLMixerModel",
    "AutoModelForMaskedLM": "modeling_vlmixer.VLMixerForMaskedLM",
    "AutoModelForPreTraining": "modeling_vlmixer.VLMixerForPreTraining",
    "AutoModelForVisualQuestionAnswering": "modeling_vlmixer.VLMixerForQuestionAnswering",
    "AutoModelForSequenceClassification": "modeling_vlmixer.VLMixerForSequenceClassification",
    "AutoModelForImageTextToText": "modeling_vlmixer.VLMixerForCaptioning",
}
IGNORE_INDEX = -100
# What `generate` hands `prepare_inputs_for_generation` for a key-value cache, which captioning does not keep.
GENERATION_CACHE_INPUTS = ("past_key_values", "cache", "use_cache", "cache_position", "cache_params")
MAX_LOGIT_SCALE = 4.6052  # ln(100), CLIP's bound on the inverse temperature


def validating_values() -> bool:
    """
    Whether input checks that read tensor values (token id ranges, placeholder counts, NaN features, box ranges) run.

    They run in eager mode. Under `torch.compile` / `torch.export` they are skipped, as transformers' own models skip
    theirs: a check such as `int(input_ids.max()) >= vocab_size` needs the value on the host, a data-dependent guard
    that breaks the graph (and fails `fullgraph=True`). Checks on shapes still run when compiling.
    """
    return not is_torchdynamo_compiling()


def box_geometry(boxes: torch.Tensor, box_dim: int) -> torch.Tensor:
    """(N, 4) normalised x1, y1, x2, y2 -> (N, box_dim): the corners, then width and height when box_dim is 6."""
    if box_dim == 4:
        return boxes
    return torch.cat([boxes, boxes[:, 2:3] - boxes[:, 0:1], boxes[:, 3:4] - boxes[:, 1:2]], dim=-1)


BOX_TOLERANCE = 1e-3  # normalised coordinates may overshoot [0, 1] by rounding, never by more


def check_boxes(boxes: torch.Tensor, name: str) -> None:
    """Boxes are normalised x1, y1, x2, y2: finite and within [0, 1] (a pixel box or a corrupt value is refused)."""
    if not validating_values():
        return
    if not torch.isfinite(boxes).all():
        raise ValueError(f"`{name}` contain NaN or infinite values.")
    if boxes.numel() and (float(boxes.min()) < -BOX_TOLERANCE or float(boxes.max()) > 1 + BOX_TOLERANCE):
        raise ValueError(
            f"`{name}` must be normalised x1, y1, x2, y2 in [0, 1] (divide pixel boxes by the image width and "
            f"height), got values in [{float(boxes.min()):.4g}, {float(boxes.max()):.4g}]."
        )


class VLMixerVisualEmbeddings(nn.Module):
    """Projects region features (N, visual_feature_dim) and boxes (N, 4) to visual token embeddings (N, hidden)."""

    def __init__(self, config: VLMixerConfig):
        super().__init__()
        self.box_dim = config.visual_box_dim
        self.feature_projection = nn.Linear(config.visual_feature_dim, config.hidden_size)
        self.feature_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.box_projection = nn.Linear(config.visual_box_dim, config.hidden_size)
        self.box_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        # Added to visual tokens only, so that text-only inputs stay exactly what the BERT initialisation computes.
        self.modality_embedding = nn.Parameter(torch.zeros(config.hidden_size))

    def forward(self, visual_features: torch.Tensor, visual_boxes: torch.Tensor) -> torch.Tensor:
        features = self.feature_layer_norm(self.feature_projection(visual_features))
        if validating_values() and not torch.isfinite(features).all():
            # finite features so large (1e38) that their projection overflows would turn every output into NaN
            largest = float(visual_features.detach().abs().max())
            raise ValueError(
                f"`visual_features` overflow the model's projection (|x| up to {largest:.3g}): give the backbone's "
                "features as they come (EfficientNet-Lite0's are of order 1-10), not scaled."
            )
        boxes = self.box_layer_norm(self.box_projection(box_geometry(visual_boxes, self.box_dim)))
        return features + boxes + self.modality_embedding


class VLMixerEmbeddings(BertEmbeddings):
    """BERT's word + position + token-type embeddings, with visual token embeddings in the placeholder rows."""

    def __init__(self, config: VLMixerConfig):
        super().__init__(config)
        self.image_token_id = config.image_token_id
        self.visual = VLMixerVisualEmbeddings(config)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        visual_features: torch.Tensor | None = None,
        visual_boxes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        input_ids (B, L) with placeholders, or inputs_embeds (B, L, H) with the placeholder's word embedding in those
        rows; visual_features (N, D) and visual_boxes (N, 4) in placeholder order.
        """
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if visual_features is not None:
            visual_embeds = self.visual(visual_features.to(inputs_embeds.dtype), visual_boxes.to(inputs_embeds.dtype))
            placeholders = self.placeholder_mask(input_ids, inputs_embeds).unsqueeze(-1)
            inputs_embeds = inputs_embeds.masked_scatter(placeholders, visual_embeds)
        return super().forward(token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds)

    def placeholder_mask(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None) -> torch.Tensor:
        """(B, L) True at the visual placeholders: from `input_ids`, or (as LLaVA's `get_placeholder_mask`) the rows
        of `inputs_embeds` equal to the placeholder's word embedding."""
        if input_ids is not None:
            return input_ids == self.image_token_id
        placeholder = self.word_embeddings.weight[self.image_token_id].to(inputs_embeds.dtype)
        return (inputs_embeds == placeholder).all(dim=-1)


def build_vision_backbone(config: VLMixerConfig) -> nn.Module | None:
    """The frozen module that turns region crops into features, or None when the model reads precomputed features."""
    if config.vision_backbone == "precomputed":
        return None
    if config.vision_backbone == "efficientnet-lite0":
        backbone = EfficientNetLite0()
    else:
        vision_config = dict(config.vision_config)
        backbone = AutoModel.from_config(AutoConfig.for_model(vision_config.pop("model_type"), **vision_config))
    backbone.requires_grad_(False)
    return backbone.eval()


def pooled_backbone_features(backbone: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) crops -> (N, D) one feature per crop."""
    if isinstance(backbone, EfficientNetLite0):
        return backbone.pooled_features(pixel_values)
    outputs = backbone(pixel_values=pixel_values)
    pooled = getattr(outputs, "pooler_output", None)
    if pooled is None:
        pooled = outputs.last_hidden_state.mean(dim=1)
    return pooled.flatten(1)


class VLMixerPreTrainedModel(PreTrainedModel):
    config_class = VLMixerConfig
    config: VLMixerConfig
    base_model_prefix = "vlmixer"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["VLMixerEmbeddings", "BertLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_record_outputs = {"hidden_states": BertLayer, "attentions": BertSelfAttention}
    # Trainer must keep dividing the loss by the accumulation steps: our losses are means over their own items.
    accepts_loss_kwargs = False
    _auto_class = "AutoModel"

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, VLMixerContrastiveHead):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
        elif isinstance(module, BertLMPredictionHead):
            init.zeros_(module.bias)
        elif isinstance(module, VLMixerVisualEmbeddings):
            init.zeros_(module.modality_embedding)
        elif isinstance(module, BertEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
            init.zeros_(module.token_type_ids)
        elif isinstance(module, VLMixerMomentumContrast):
            for buffer in (
                module.text_queue,
                module.mixed_queue,
                module.queue_pointer,
                module.queue_count,
                module.initialized,
            ):
                init.zeros_(buffer)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Saves as `PreTrainedModel` does, with every Auto class in `auto_map` so the folder loads as remote code, and
        the pipelines this head serves in `custom_pipelines` (zero-shot image classification, visual QA)."""
        from .pipeline_vlmixer import custom_pipelines_for  # the import also makes saving copy pipeline_vlmixer.py

        self.config.auto_map = {**AUTO_MAP, **(getattr(self.config, "auto_map", None) or {})}
        pipelines = custom_pipelines_for(type(self).__name__)
        if pipelines:
            self.config.custom_pipelines = pipelines
        elif hasattr(self.config, "custom_pipelines"):
            del self.config.custom_pipelines
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if self._auto_class is None and kwargs.get("is_main_process", True):
            # A head without an Auto class (retrieval, visual reasoning): its code travels with the folder too.
            custom_object_save(self, save_directory)
        return result

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, loading info) with output_loading_info
        # Loading replaces the parameters it does not find with fresh, trainable ones; the backbone and the momentum
        # encoder never train.
        for frozen in (getattr(model.base_model, "vision_backbone", None), getattr(model, "momentum", None)):
            if frozen is not None:
                frozen.requires_grad_(False)
        return loaded

    def image_regions(
        self,
        visual_features: torch.Tensor | None = None,
        visual_boxes: torch.Tensor | None = None,
        region_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
    ) -> "ImageRegions":
        r"""
        Images given one per row (the input format of retrieval and captioning) -> their regions, image after image.

        visual_features (`(batch_size, num_regions, visual_feature_dim)`): region features, padded to the image
            with the most regions; `(batch_size, visual_feature_dim)` is one region (the whole image) per image.
        visual_boxes (`(batch_size, num_regions, 4)`, *optional*): normalised x1, y1, x2, y2; the whole image when
            omitted.
        region_mask (`(batch_size, num_regions)`, *optional*): 1 for a region, 0 for padding; all regions when omitted.
        pixel_values (`(batch_size, num_regions, 3, height, width)`, *optional*): region crops for the backbone,
            instead of `visual_features`.
        """
        if (visual_features is None) == (pixel_values is None):
            raise ValueError("Pass the images as exactly one of `visual_features` or `pixel_values`.")
        padded = visual_features if visual_features is not None else pixel_values
        per_image_dims = 3 if visual_features is not None else 5
        if padded.dim() == per_image_dims - 1:  # one region per image
            padded = padded.unsqueeze(1)
            visual_boxes = (
                visual_boxes.unsqueeze(1) if visual_boxes is not None and visual_boxes.dim() == 2 else visual_boxes
            )
            region_mask = (
                region_mask.unsqueeze(1) if region_mask is not None and region_mask.dim() == 1 else region_mask
            )
        if padded.dim() != per_image_dims:
            name = "visual_features" if visual_features is not None else "pixel_values"
            shape = (
                "(batch_size, num_regions, visual_feature_dim)"
                if visual_features is not None
                else "(batch_size, num_regions, 3, height, width)"
            )
            raise ValueError(
                f"`{name}` must have shape {shape} (one row of regions per image), got {tuple(padded.shape)}."
            )
        if visual_features is not None and padded.shape[-1] != self.config.visual_feature_dim:
            raise ValueError(
                f"`visual_features` must have shape (batch_size, num_regions, {self.config.visual_feature_dim}) for "
                f"backbone {self.config.backbone_id!r}, got {tuple(padded.shape)}."
            )
        batch_size, num_regions = padded.shape[:2]
        if region_mask is None:
            region_mask = torch.ones(batch_size, num_regions, dtype=torch.bool, device=padded.device)
        elif region_mask.shape != (batch_size, num_regions):
            raise ValueError(
                f"`region_mask` must have shape ({batch_size}, {num_regions}), got {tuple(region_mask.shape)}."
            )
        region_mask = region_mask.to(padded.device).bool()
        counts = region_mask.sum(dim=1)
        if bool((counts == 0).any()):
            raise ValueError("Every image needs at least one region; `region_mask` has a row of zeros.")
        if visual_boxes is not None and visual_boxes.shape != (batch_size, num_regions, 4):
            raise ValueError(
                f"`visual_boxes` must have shape ({batch_size}, {num_regions}, 4), got {tuple(visual_boxes.shape)}."
            )
        features = padded[region_mask]
        if pixel_values is not None:
            features = self.base_model.get_visual_features(features)
        boxes = visual_boxes[region_mask] if visual_boxes is not None else None
        return ImageRegions(features, boxes, counts)

    @classmethod
    def from_bert_pretrained(cls, pretrained_model_name_or_path: str, load_backbone: bool = True, **config_overrides):
        """
        Builds this model from a `BertModel` checkpoint (a local folder or a Hub name): the encoder, embeddings and
        pooler come from BERT, the visual embeddings start fresh, and the built-in EfficientNet-Lite0 backbone gets its
        ImageNet weights when `load_backbone` is set. `config_overrides` go to [`VLMixerConfig`].
        """
        bert = BertModel.from_pretrained(pretrained_model_name_or_path, dtype=torch.float32)
        bert_text_settings = {
            name: getattr(bert.config, name)
            for name in (
                "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id",
            )
        }  # fmt: skip
        config = cls.config_class(**{**bert_text_settings, **config_overrides})
        model = cls(config)
        bert_weights = bert.state_dict()
        if model.base_model.pooler is None:  # heads that read every position have no use for BERT's pooler
            bert_weights = {key: value for key, value in bert_weights.items() if not key.startswith("pooler.")}
        missing, unexpected = model.base_model.load_state_dict(bert_weights, strict=False)
        not_from_bert = [key for key in missing if not key.startswith(("embeddings.visual.", "vision_backbone."))]
        if unexpected or any(not key.startswith("pooler.") for key in not_from_bert):
            raise ValueError(
                f"{pretrained_model_name_or_path} is not a BERT checkpoint of this shape: missing {not_from_bert}, "
                f"unexpected {unexpected}."
            )
        if not_from_bert:
            logger.warning(f"{pretrained_model_name_or_path} has no pooler; it starts from random weights.")
        if load_backbone and config.vision_backbone == "efficientnet-lite0":
            model.base_model.vision_backbone.load_state_dict(load_imagenet_state_dict(), strict=True)
        model.config.name_or_path = str(pretrained_model_name_or_path)
        model.tie_weights()
        return model


class VLMixerModel(VLMixerPreTrainedModel):
    """The bare VLMixer encoder: `[CLS] words-and-visual-tokens [SEP] (regions [SEP])` -> hidden states (B, L, H)."""

    def __init__(self, config: VLMixerConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.config = config
        self.gradient_checkpointing = False
        self.embeddings = VLMixerEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.vision_backbone = build_vision_backbone(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def train(self, mode: bool = True):
        # The backbone is frozen: its BatchNorm statistics and dropout must not follow the encoder into train mode.
        super().train(mode)
        if self.vision_backbone is not None:
            self.vision_backbone.eval()
        return self

    @torch.no_grad()
    def get_visual_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) region crops -> (N, visual_feature_dim) features from the frozen backbone."""
        if self.vision_backbone is None:
            raise ValueError(
                "This model reads precomputed `visual_features` (vision_backbone='precomputed'); it has no backbone "
                "for `pixel_values`."
            )
        return pooled_backbone_features(self.vision_backbone, pixel_values)

    def _encoder_attention_mask(self, attention_mask: torch.Tensor | None, embeddings: torch.Tensor):
        """A (B, L) padding mask or a (B, L, L) / (B, 1, L, L) query-key mask, in the format of the attention."""
        if attention_mask is None or attention_mask.dim() == 2:
            return create_bidirectional_mask(
                config=self.config, inputs_embeds=embeddings, attention_mask=attention_mask
            )
        batch_size, length = embeddings.shape[:2]
        if attention_mask.dim() == 4 and attention_mask.shape[1] == 1:
            attention_mask = attention_mask[:, 0]
        if attention_mask.shape != (batch_size, length, length):
            raise ValueError(
                f"`attention_mask` must have shape ({batch_size}, {length}) for padding or ({batch_size}, {length}, "
                f"{length}) for which key each query attends, got {tuple(attention_mask.shape)}."
            )
        if self.config._attn_implementation.startswith("flash"):
            raise ValueError(
                "A per-example (batch, query, key) attention mask needs sdpa, eager or flex attention, not flash."
            )
        allowed = attention_mask.to(device=embeddings.device, dtype=torch.bool)
        if validating_values() and not bool(allowed.any(dim=-1).all()):
            raise ValueError("Every query must be allowed to attend at least one key in `attention_mask`.")

        def per_example(batch_idx, head_idx, q_idx, kv_idx):
            return allowed[batch_idx, q_idx, kv_idx]

        return create_bidirectional_mask(
            config=self.config, inputs_embeds=embeddings, attention_mask=None, and_mask_function=per_example
        )

    def _check_text_inputs(
        self,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
    ) -> None:
        """Clear errors for inputs that would otherwise fail deep inside an embedding lookup (IndexError) or silently."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        tokens = input_ids if input_ids is not None else inputs_embeds
        if tokens.dim() < 2 or tokens.shape[0] == 0 or tokens.shape[1] == 0:
            raise ValueError(
                f"Got an empty batch: {'input_ids' if input_ids is not None else 'inputs_embeds'} has shape "
                f"{tuple(tokens.shape)}; pass at least one sequence of at least one token."
            )
        config = self.config
        length = tokens.shape[1]
        if position_ids is None and length > config.max_position_embeddings:
            raise ValueError(
                f"The sequences have {length} tokens, more than max_position_embeddings="
                f"{config.max_position_embeddings}; truncate them (the processor does, to max_length)."
            )
        if not validating_values():
            return  # the checks below read tensor values (see `validating_values`)
        if input_ids is not None and input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= config.vocab_size):
            bad = input_ids[(input_ids < 0) | (input_ids >= config.vocab_size)]
            raise ValueError(
                f"`input_ids` hold token ids outside the vocabulary [0, {config.vocab_size}), e.g. {int(bad[0])}: was "
                "the text tokenized with another tokenizer?"
            )
        if position_ids is not None and position_ids.numel():
            if int(position_ids.min()) < 0 or int(position_ids.max()) >= config.max_position_embeddings:
                raise ValueError(
                    f"`position_ids` must lie in [0, max_position_embeddings={config.max_position_embeddings}), got "
                    f"[{int(position_ids.min())}, {int(position_ids.max())}]."
                )
        if token_type_ids is not None and token_type_ids.numel():
            if int(token_type_ids.min()) < 0 or int(token_type_ids.max()) >= config.type_vocab_size:
                raise ValueError(f"`token_type_ids` must lie in [0, type_vocab_size={config.type_vocab_size}).")

    def _visual_inputs(
        self,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        visual_features: torch.Tensor | None,
        visual_boxes: torch.Tensor | None,
        pixel_values: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Checks the visual inputs against the placeholders and returns (features (N, D), boxes (N, 4)) or Nones."""
        if pixel_values is not None:
            if visual_features is not None:
                raise ValueError("Pass either `visual_features` or `pixel_values`, not both.")
            visual_features = self.get_visual_features(pixel_values)
        num_features = 0 if visual_features is None else visual_features.shape[0]
        if input_ids is None and visual_features is None:
            num_placeholders = 0  # embeddings without visual inputs: nothing to look for
        elif not validating_values():
            # Compiling: the count is a tensor value, not checked (an in-graph `torch._check_tensor_all` would break
            # the graph of a plain `torch.compile`). Too few features still fail in `masked_scatter` (RuntimeError);
            # extra feature rows are ignored.
            num_placeholders = num_features
        else:
            num_placeholders = int(self.embeddings.placeholder_mask(input_ids, inputs_embeds).sum())
        if num_placeholders != num_features:
            where = "`input_ids`" if input_ids is not None else "`inputs_embeds` (rows equal to its word embedding)"
            raise ValueError(
                f"{where} hold {num_placeholders} visual placeholders (image_token_id="
                f"{self.config.image_token_id}) but {num_features} visual features were given; pass one feature row "
                "per placeholder, in the order the placeholders appear."
            )
        if visual_features is None:
            return None, None
        if visual_features.dim() != 2 or visual_features.shape[-1] != self.config.visual_feature_dim:
            raise ValueError(
                f"`visual_features` must have shape (num_visual_tokens, {self.config.visual_feature_dim}) for "
                f"backbone {self.config.backbone_id!r}, got {tuple(visual_features.shape)}."
            )
        if validating_values() and not torch.isfinite(visual_features).all():
            raise ValueError("`visual_features` contain NaN or infinite values.")
        if visual_boxes is None:
            # A patch given without its box is taken as a whole image.
            visual_boxes = visual_features.new_tensor([0.0, 0.0, 1.0, 1.0]).expand(num_features, 4)
        elif visual_boxes.shape != (num_features, 4):
            raise ValueError(f"`visual_boxes` must have shape ({num_features}, 4), got {tuple(visual_boxes.shape)}.")
        else:
            check_boxes(visual_boxes, "visual_boxes")
        return visual_features, visual_boxes

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        visual_features: torch.Tensor | None = None,
        visual_boxes: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor] | BaseModelOutputWithPooling:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
            Word-piece ids, with `config.image_token_id` wherever a visual token goes.
        visual_features (`torch.FloatTensor` of shape `(num_visual_tokens, visual_feature_dim)`, *optional*):
            One feature per placeholder, in row-major placeholder order over the whole batch.
        visual_boxes (`torch.FloatTensor` of shape `(num_visual_tokens, 4)`, *optional*):
            Normalised x1, y1, x2, y2 of each region in its source image; the whole image when omitted.
        pixel_values (`torch.FloatTensor` of shape `(num_visual_tokens, 3, height, width)`, *optional*):
            Region crops that the built-in backbone turns into `visual_features`.
        attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
            1 for tokens, 0 for padding. A `(batch_size, sequence_length, sequence_length)` (or `(batch_size, 1,
            sequence_length, sequence_length)`) mask instead says, per example, which key each query may attend (1 or
            True); captioning uses it to keep the text causal while the regions stay visible to every token.
        """
        self._check_text_inputs(input_ids, inputs_embeds, position_ids, token_type_ids)
        visual_features, visual_boxes = self._visual_inputs(
            input_ids, inputs_embeds, visual_features, visual_boxes, pixel_values
        )
        embedding_output = self.embeddings(
            input_ids=input_ids,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            visual_features=visual_features,
            visual_boxes=visual_boxes,
        )
        attention_mask = self._encoder_attention_mask(attention_mask, embedding_output)
        encoder_outputs = self.encoder(embedding_output, attention_mask=attention_mask, **kwargs)
        sequence_output = encoder_outputs.last_hidden_state
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        return BaseModelOutputWithPooling(last_hidden_state=sequence_output, pooler_output=pooled_output)


class VLMixerOnlyMLMHead(nn.Module):
    """BERT's MLM head: (..., hidden) -> (..., vocab_size) scores, decoder tied to the word embeddings."""

    def __init__(self, config: VLMixerConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, sequence_output: torch.Tensor) -> torch.Tensor:
        return self.predictions(sequence_output)


class VLMixerPreTrainedModelWithMLMHead(VLMixerPreTrainedModel):
    """The encoder (no pooler) with BERT's MLM head, its decoder tied to the word embeddings: the heads that predict words."""

    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "vlmixer.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def __init__(self, config: VLMixerConfig, add_pooling_layer: bool = False):
        super().__init__(config)
        self.vlmixer = VLMixerModel(config, add_pooling_layer=add_pooling_layer)
        self.cls = VLMixerOnlyMLMHead(config)

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings):
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias


class VLMixerForMaskedLM(VLMixerPreTrainedModelWithMLMHead):
    """VLMixer with a masked language modelling head; works with the `fill-mask` pipeline."""

    _auto_class = "AutoModelForMaskedLM"

    def __init__(self, config: VLMixerConfig):
        super().__init__(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        visual_features: torch.Tensor | None = None,
        visual_boxes: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor] | MaskedLMOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Token ids to predict, -100 where nothing is predicted.
        """
        outputs = self.vlmixer(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            visual_features=visual_features,
            visual_boxes=visual_boxes,
            pixel_values=pixel_values,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        prediction_scores = self.cls(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(prediction_scores.view(-1, self.config.vocab_size), labels.view(-1))
        return MaskedLMOutput(
            loss=loss, logits=prediction_scores, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


# ---------------------------------------------------------------------------------------------- losses


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_gather_rows(tensor: torch.Tensor, pad_value=0) -> tuple[torch.Tensor, int]:
    """
    (every process's rows of `tensor` (no gradient), in process order; where this process's rows start). Rows may
    differ in number between processes, and a second dimension in length (padded at the end with `pad_value`).
    """
    if not is_distributed():
        return tensor, 0
    sizes = torch.tensor(tensor.shape[:2] if tensor.dim() > 1 else (tensor.shape[0], 0), device=tensor.device)
    all_sizes = [torch.empty_like(sizes) for _ in range(dist.get_world_size())]
    dist.all_gather(all_sizes, sizes)
    rows, width = max(int(size[0]) for size in all_sizes), max(int(size[1]) for size in all_sizes)
    padding = [0, 0] * (tensor.dim() - 2) + ([0, width - tensor.shape[1]] if tensor.dim() > 1 else []) + [0, rows - len(tensor)]
    padded = F.pad(tensor.detach(), padding, value=pad_value)
    gathered = [torch.empty_like(padded) for _ in all_sizes]
    dist.all_gather(gathered, padded.contiguous())
    start = sum(int(size[0]) for size in all_sizes[: dist.get_rank()])
    return torch.cat([part[: int(size[0])] for part, size in zip(gathered, all_sizes)]), start


def batch_seed(text_ids: torch.Tensor, counts: torch.Tensor) -> int:
    """A seed that is a function of a global batch's content: the same on every process and for any process count."""
    weights = torch.arange(1, text_ids.shape[1] + 1, device=text_ids.device)
    return int(((text_ids.clamp(min=0) * weights).sum() * 1_000_003 + counts.sum()) % (2**61 - 1))


def any_process(flag: bool, device) -> bool:
    """Whether `flag` holds on any process: a loss whose reduction calls all_reduce must be computed by every process
    or by none, else a process whose batch happens to lack its targets leaves the others waiting forever."""
    if not is_distributed():
        return flag
    value = torch.tensor(float(flag), device=device)
    dist.all_reduce(value)
    return bool(value > 0)


def global_mean(loss_sum: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """
    `loss_sum / count` over the whole global batch. In distributed training each process divides its own sum by the
    count of all processes (times their number, as DDP averages the gradients), so N processes compute the same loss
    and gradients as one process on the concatenated batch, however unevenly the labels fall.
    """
    count = count.detach().to(torch.float32)
    if is_distributed():
        count = count.clone()
        dist.all_reduce(count)
        loss_sum = loss_sum * dist.get_world_size()
    return loss_sum / count.clamp(min=1.0)


def all_gather_with_grad(rows: torch.Tensor) -> torch.Tensor:
    """
    (B, P) rows of every process concatenated in rank order, with torch's autograd all_gather: its backward sums the
    gradients every process computed for this process's rows (global_mean has already scaled the loss for DDP's mean).
    """
    try:  # the collective torch recommends since its older autograd all_gather was deprecated
        from torch.distributed._functional_collectives import all_gather_single
    except ImportError:  # older torch
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(rows))
    return all_gather_single(rows, 0, dist.group.WORLD)


def gather_with_grad(embeddings: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(B, P) local rows -> (world * B, P) rows of all processes, gradients flowing back; and this process's offset."""
    if not is_distributed():
        return embeddings, 0
    return all_gather_with_grad(embeddings), dist.get_rank() * embeddings.shape[0]


def symmetric_info_nce(first: torch.Tensor, second: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """
    CLIP's symmetric InfoNCE between two (B, P) L2-normalised views: row i of each is the positive of row i of the
    other, every other row of the global batch (all processes) a negative.
    """
    all_first, offset = gather_with_grad(first)
    all_second, _ = gather_with_grad(second)
    targets = torch.arange(first.shape[0], device=first.device) + offset
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    first_to_second = F.cross_entropy(scale * first @ all_second.T, targets, reduction="sum")
    second_to_first = F.cross_entropy(scale * second @ all_first.T, targets, reduction="sum")
    return global_mean((first_to_second + second_to_first) / 2, torch.tensor(float(first.shape[0])))


def mean_pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L, H) -> (B, H), the mean over attended positions (the pooling all-MiniLM-L6-v2 was trained with)."""
    mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
    return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class VLMixerContrastiveHead(nn.Module):
    """Sentence embeddings for contrast: mean pooling, a linear projection, L2 normalisation; a learnable temperature."""

    def __init__(self, config: VLMixerConfig):
        super().__init__()
        self.projection = nn.Linear(config.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, H) hidden states -> (B, projection_dim) unit vectors."""
        return F.normalize(self.projection(mean_pool(hidden_states, attention_mask)), dim=-1)


class VLMixerMomentumContrast(nn.Module):
    """
    The momentum encoder and queues of the text stream's contrast (MoCo / ALBEF): an exponential moving average of the
    encoder and the contrastive head, and the unit embeddings it gave to the last `momentum_queue_size` original and
    mixed sentences, extra negatives for small batches. It never trains and is not saved by `save_pretrained` (a
    loaded model copies its encoder at the first forward); resumable training states (`model.state_dict()`) keep it.
    """

    def __init__(self, config: VLMixerConfig):
        super().__init__()
        self.encoder = VLMixerModel(config, add_pooling_layer=False)
        self.encoder.vision_backbone = None  # the text stream reads gallery features, never pixels
        self.head = VLMixerContrastiveHead(config)
        self.requires_grad_(False)
        size, dim = config.momentum_queue_size, config.projection_dim
        self.register_buffer("text_queue", torch.zeros(size, dim))
        self.register_buffer("mixed_queue", torch.zeros(size, dim))
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))  # where the next key goes
        self.register_buffer("queue_count", torch.zeros((), dtype=torch.long))  # how many rows hold keys
        self.register_buffer("initialized", torch.zeros((), dtype=torch.long))  # 1 once copied from the encoder
        self._keys_to_ignore_on_save = set(self.state_dict())

    def train(self, mode: bool = True):
        return super().train(False)  # keys without dropout

    @torch.no_grad()
    def follow(self, encoder: nn.Module, head: nn.Module, coefficient: float) -> None:
        """momentum <- coefficient * momentum + (1 - coefficient) * online; a plain copy the first time."""
        first = not bool(self.initialized)
        for momentum_part, online_part in ((self.encoder, encoder), (self.head, head)):
            for name, momentum_parameter in momentum_part.named_parameters():
                online = online_part.get_parameter(name).detach()
                if first:
                    momentum_parameter.copy_(online)
                else:
                    momentum_parameter.lerp_(online, 1.0 - coefficient)
        self.initialized.fill_(1)

    @torch.no_grad()
    def embed(self, **inputs) -> torch.Tensor:
        return self.head(self.encoder(**inputs, return_dict=True).last_hidden_state, inputs["attention_mask"])

    @torch.no_grad()
    def enqueue(self, text_keys: torch.Tensor, mixed_keys: torch.Tensor) -> None:
        """Writes the newest keys over the oldest (at most the queue size of them)."""
        size = self.text_queue.shape[0]
        text_keys, mixed_keys = text_keys[-size:], mixed_keys[-size:]
        rows = (self.queue_pointer + torch.arange(len(text_keys), device=text_keys.device)) % size
        self.text_queue[rows] = text_keys.to(self.text_queue.dtype)
        self.mixed_queue[rows] = mixed_keys.to(self.mixed_queue.dtype)
        self.queue_pointer.copy_((self.queue_pointer + len(text_keys)) % size)
        self.queue_count.clamp_(max=size - len(text_keys)).add_(len(text_keys))

    def queued(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (queue_count, P) text and mixed keys held so far."""
        count = int(self.queue_count)
        return self.text_queue[:count], self.mixed_queue[:count]


class VLMixerMatchingHead(nn.Module):
    """Image-text matching on the pooled [CLS] (as BERT's next-sentence head): (B, H) -> (B, 2), column 1 = matched."""

    def __init__(self, config: VLMixerConfig):
        super().__init__()
        self.classifier = nn.Linear(config.hidden_size, 2)

    def forward(self, pooled_output: torch.Tensor) -> torch.Tensor:
        return self.classifier(pooled_output)


class ImageRegions(NamedTuple):
    """The regions of a batch of images, image after image: features (N, D), boxes (N, 4) or None, counts (B,)."""

    features: torch.Tensor
    boxes: torch.Tensor | None
    counts: torch.Tensor

    def rows_of(self, image_index: torch.Tensor) -> torch.Tensor:
        """The (sum of counts[image_index],) feature rows of the images `image_index`, in that order."""
        counts = self.counts[image_index]
        firsts = (self.counts.cumsum(0) - self.counts)[image_index]
        firsts_in_output = (counts.cumsum(0) - counts).repeat_interleave(counts)
        offsets = torch.arange(int(counts.sum()), device=counts.device) - firsts_in_output
        return firsts.repeat_interleave(counts) + offsets


def image_sequence_inputs(counts: torch.Tensor, config: VLMixerConfig) -> dict[str, torch.Tensor]:
    """
    `[CLS] regions [SEP]` for images of `counts` (B,) regions: (B, max count + 2) `input_ids` and `attention_mask`,
    padding at the end. This is the image side of contrast, exactly what the processor makes of `"<image>" * R`.
    """
    length = int(counts.max()) + 2
    index = torch.arange(length, device=counts.device).unsqueeze(0)
    ends = counts.unsqueeze(1) + 1  # where [SEP] goes
    input_ids = torch.full((len(counts), length), config.pad_token_id or 0, dtype=torch.long, device=counts.device)
    input_ids[(index > 0) & (index < ends)] = config.image_token_id
    input_ids[:, 0] = config.cls_token_id
    input_ids[index == ends] = config.sep_token_id
    return {"input_ids": input_ids, "attention_mask": (index <= ends).long()}


def padding_at_the_end(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows padded at the start (a tokenizer with `padding_side="left"`) -> the same tokens in order, padding at the
    end, the layout texts are joined with images in; rows already padded at the end are returned as they are."""
    if not bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
        return input_ids, attention_mask
    order = torch.sort((attention_mask == 0).int(), dim=1, stable=True).indices
    return input_ids.gather(1, order), attention_mask.gather(1, order)


def text_image_pair_inputs(
    text_ids: torch.Tensor,
    text_mask: torch.Tensor,
    regions: ImageRegions,
    text_index: torch.Tensor,
    image_index: torch.Tensor,
    config: VLMixerConfig,
) -> dict[str, torch.Tensor]:
    """
    `[CLS] text [SEP] regions [SEP]` for the pairs (text_index[k], image_index[k]): the processor's image-text layout,
    token type 1 on the regions and the last [SEP]. Texts are `[CLS] text [SEP]` rows (B_t, L), padded at the end.
    """
    if bool((text_mask[:, 1:] > text_mask[:, :-1]).any()):
        raise ValueError("Texts must be padded at the end (right padding) to be joined with images.")
    lengths, counts = text_mask.sum(dim=1)[text_index], regions.counts[image_index]
    totals = lengths + counts + 1
    if int(totals.max()) > config.max_position_embeddings:
        raise ValueError(
            f"A text with its image needs {int(totals.max())} tokens, more than max_position_embeddings="
            f"{config.max_position_embeddings}; shorten the texts or use fewer regions."
        )
    index = torch.arange(int(totals.max()), device=text_ids.device).unsqueeze(0)
    lengths, totals = lengths.unsqueeze(1), totals.unsqueeze(1)
    in_text, in_image = index < lengths, (index >= lengths) & (index < totals)
    text_part = text_ids[text_index].gather(1, index.clamp(max=text_ids.shape[1] - 1).expand(len(text_index), -1))
    input_ids = torch.where(in_text, text_part, config.pad_token_id or 0)
    input_ids = torch.where(in_image, config.image_token_id, input_ids)
    input_ids = torch.where(index == totals - 1, config.sep_token_id, input_ids)
    rows = regions.rows_of(image_index)
    return {
        "input_ids": input_ids,
        "attention_mask": (index < totals).long(),
        "token_type_ids": in_image.long(),
        "visual_features": regions.features[rows],
        "visual_boxes": regions.boxes[rows] if regions.boxes is not None else None,
    }


class VLMixerImageTextMixin:
    """
    What pre-training and retrieval share (they hold `vlmixer` with a pooler, `contrastive` and `matching`): unit
    embeddings of texts and of images for contrast and first-stage search, and image-text matching on [CLS] with hard
    negatives drawn from the contrastive similarities (ALBEF).
    """

    def sentence_embeddings(self, **inputs) -> torch.Tensor:
        """(B, projection_dim) unit embeddings of sequences (words and visual tokens) for contrast and retrieval."""
        return self.encode_sentences(**inputs).pooler_output

    def encode_sentences(self, **inputs) -> BaseModelOutputWithPooling:
        """The encoder's output on sequences, with `pooler_output` replaced by their unit sentence embeddings."""
        outputs = self.vlmixer(**inputs, return_dict=True)
        outputs.pooler_output = self.contrastive(outputs.last_hidden_state, inputs["attention_mask"])
        return outputs

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | BaseModelOutputWithPooling:
        r"""
        `[CLS] text [SEP]` ids (B, L) -> the encoder's output, as CLIP's `get_text_features`: `pooler_output` holds the
        (B, projection_dim) unit text embeddings (`last_hidden_state`, and `hidden_states` / `attentions` when asked).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.encode_sentences(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs
        )

    @can_return_tuple
    def get_image_features(
        self,
        visual_features: torch.Tensor | None = None,
        visual_boxes: torch.Tensor | None = None,
        region_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | BaseModelOutputWithPooling:
        r"""
        Images as `[CLS] regions [SEP]` (inputs as in `image_regions`) -> the encoder's output, as CLIP's
        `get_image_features`: `pooler_output` holds the (B, projection_dim) unit image embeddings.
        """
        regions = self.image_regions(visual_features, visual_boxes, region_mask, pixel_values)
        return self.encode_regions(regions, **kwargs)

    def encode_regions(self, regions: ImageRegions, **kwargs) -> BaseModelOutputWithPooling:
        """The encoder's output on the images `regions` holds, `pooler_output` their unit embeddings."""
        inputs = image_sequence_inputs(regions.counts, self.config)
        return self.encode_sentences(**inputs, visual_features=regions.features, visual_boxes=regions.boxes, **kwargs)

    def region_embeddings(self, regions: ImageRegions) -> torch.Tensor:
        """(B, projection_dim) unit embeddings of the images `regions` holds."""
        return self.encode_regions(regions).pooler_output

    def matching_logits(
        self,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        regions: ImageRegions,
        text_index: torch.Tensor | None = None,
        image_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(K, 2) matching logits of the pairs (text_index[k], image_index[k]); text i with image i when not given."""
        if text_index is None:
            text_index = image_index = torch.arange(len(text_ids), device=text_ids.device)
        return self.match_pairs(text_ids, text_mask, regions, text_index, image_index)[0]

    def match_pairs(self, text_ids, text_mask, regions, text_index=None, image_index=None, **kwargs):
        """(matching logits (K, 2), the encoder's output on the K `[CLS] text [SEP] regions [SEP]` pairs)."""
        if text_index is None:
            text_index = image_index = torch.arange(len(text_ids), device=text_ids.device)
        pairs = text_image_pair_inputs(text_ids, text_mask, regions, text_index, image_index, self.config)
        outputs = self.vlmixer(**pairs, return_dict=True, **kwargs)
        return self.matching(outputs.pooler_output), outputs

    def hard_negative_matching_loss(
        self,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        regions: ImageRegions,
        text_embeds: torch.Tensor,
        image_embeds: torch.Tensor,
    ) -> torch.Tensor:
        """
        Image-text matching on B matched pairs (text i with image i): each pair is a positive; each text also meets one
        image and each image one text drawn with probability softmax(similarity) among the other pairs of the batch
        (pairs whose texts are identical are never negatives of each other). Cross-entropy over the 3B pairs.
        In eval mode the negative is the most similar one instead of a draw, so that a validation loss is
        deterministic (the same inputs give the same loss).
        """
        # Negatives come from the whole global batch, drawn identically on every process from its content: N processes
        # then train as one process does on the concatenated batch.
        text_ids, start = all_gather_rows(text_ids, self.config.pad_token_id or 0)
        text_mask = all_gather_rows(text_mask)[0]
        regions = ImageRegions(all_gather_rows(regions.features)[0],
                               None if regions.boxes is None else all_gather_rows(regions.boxes)[0],
                               all_gather_rows(regions.counts)[0])  # fmt: skip
        local = len(text_embeds)
        batch = torch.arange(start, start + local, device=text_ids.device)
        with torch.no_grad():
            text_embeds, image_embeds = all_gather_rows(text_embeds)[0], all_gather_rows(image_embeds)[0]
            scale = self.contrastive.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
            similarity = scale * text_embeds.float() @ image_embeds.float().T  # (texts, images)
            padded_text = text_ids.masked_fill(text_mask == 0, -1)
            same_text = (padded_text.unsqueeze(1) == padded_text.unsqueeze(0)).all(dim=-1)
            generator = torch.Generator(device=similarity.device).manual_seed(batch_seed(text_ids, regions.counts))
            negative_images = self._draw(similarity, same_text, self.training, generator)[batch]  # for each text
            negative_texts = self._draw(similarity.T, same_text, self.training, generator)[batch]  # for each image
        has_image, has_text = negative_images >= 0, negative_texts >= 0
        text_index = torch.cat([batch, batch[has_image], negative_texts[has_text]])
        image_index = torch.cat([batch, negative_images[has_image], batch[has_text]])
        labels = (torch.arange(len(text_index), device=batch.device) < len(batch)).long()
        logits = self.matching_logits(text_ids, text_mask, regions, text_index, image_index)
        return global_mean(F.cross_entropy(logits.float(), labels, reduction="sum"), torch.tensor(float(len(labels))))

    @staticmethod
    def _draw(similarity: torch.Tensor, excluded: torch.Tensor, sample: bool = True, generator=None) -> torch.Tensor:
        """
        Per row, a column drawn with probability softmax(similarity) over the columns not `excluded` (with `sample`;
        without, the most similar of them); -1 if none.
        """
        allowed = ~excluded
        drawn = torch.full((len(similarity),), -1, dtype=torch.long, device=similarity.device)
        rows = allowed.any(dim=1)
        if bool(rows.any()):
            scores = similarity[rows].masked_fill(~allowed[rows], float("-inf"))
            drawn[rows] = (torch.multinomial(scores.softmax(dim=1), 1, generator=generator).squeeze(1) if sample
                           else scores.argmax(dim=1))  # fmt: skip
        return drawn


@dataclass
class VLMixerForPreTrainingOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`): the weighted sum of the losses below that the batch carries.
    mlm_loss: masked language modelling on the mixed view (text tokens).
    patch_word_loss: predicting, at visual-token positions, the word each patch replaced.
    contrastive_loss: symmetric InfoNCE between each sentence's original and mixed views.
    patch_alignment_loss: cosine distance between each visual token and the word it replaced (projection space).
    tag_mlm_loss: tag-aided visual pre-training, masked tags predicted from the image regions.
    paired_mlm_loss: masked language modelling of captions with their image's regions.
    paired_contrastive_loss: symmetric InfoNCE between captions and their images' regions.
    paired_matching_loss: image-text matching on [CLS], hard negatives drawn from the paired contrastive similarities.
    text_embeds, mixed_embeds (`(batch_size, projection_dim)`): the unit sentence embeddings of both views.
    hidden_states, attentions: the encoder's, on the mixed view (`input_ids`), with `output_hidden_states` /
        `output_attentions`.
    """

    loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    patch_word_loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    patch_alignment_loss: torch.FloatTensor | None = None
    tag_mlm_loss: torch.FloatTensor | None = None
    paired_mlm_loss: torch.FloatTensor | None = None
    paired_contrastive_loss: torch.FloatTensor | None = None
    paired_matching_loss: torch.FloatTensor | None = None
    logit_scale: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    mixed_embeds: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


def sub_batch_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder inputs of a stream's sub-batch (its labels and extra views left out)."""
    names = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "visual_features", "visual_boxes")
    return {name: batch[name] for name in names if batch.get(name) is not None}


class VLMixerForPreTraining(VLMixerImageTextMixin, VLMixerPreTrainedModelWithMLMHead):
    """
    VLMixer pre-training. One forward computes the losses of whichever streams the batch carries:

    - visually-aided language pre-training on text-only sentences after cross-modal CutMix (the collator's output):
      `mlm_loss` on the masked mixed view, `patch_word_loss` at the visual tokens, `contrastive_loss` between
      the original view (`original_input_ids`) and the mixed view, and `patch_alignment_loss` pulling each visual
      token towards the word it replaced in the space the contrastive embeddings live in;
    - tag-aided visual pre-training (`tag_batch`: `[CLS] tags [SEP] regions [SEP]` with masked tags and `labels`);
    - paired data (`pair_batch`: caption and regions with masked caption `labels`, plus `caption_input_ids` /
      `caption_attention_mask` and `image_input_ids` / `image_attention_mask` for image-text contrast and for
      image-text matching with hard negatives, `paired_matching_loss`).

    Vocabulary logits are computed only at labelled positions. The encoder keeps BERT's pooler, which the matching
    head reads: the downstream heads start from it.
    """

    _auto_class = "AutoModelForPreTraining"
    _keys_to_ignore_on_load_missing = [r"^momentum\."]  # never saved (see VLMixerMomentumContrast)

    def __init__(self, config: VLMixerConfig):
        super().__init__(config, add_pooling_layer=True)
        self.contrastive = VLMixerContrastiveHead(config)
        self.matching = VLMixerMatchingHead(config)
        self.momentum = VLMixerMomentumContrast(config) if config.momentum_queue_size > 0 else None
        self.post_init()

    def token_prediction_loss(self, hidden_states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the vocabulary at the labelled positions of (B, L, H) only: (M, vocab) logits, not (B, L, vocab)."""
        selected = labels != IGNORE_INDEX
        logits = self.cls(hidden_states[selected]).float()
        return global_mean(F.cross_entropy(logits, labels[selected], reduction="sum"), selected.sum())

    def _idle_heads_term(self) -> torch.Tensor:
        """
        Zero times every head parameter. A step's streams leave some heads idle (the matching head and the pooler on
        text-only steps, the contrastive head on tag steps); DDP without `find_unused_parameters` needs every parameter
        in every step's graph. The term changes neither the loss nor any gradient.
        """
        heads = (self.cls, self.contrastive, self.matching, self.vlmixer.pooler)
        return sum(p.sum() for head in heads for p in head.parameters() if p.requires_grad) * 0.0

    def patch_alignment_loss(self, mixed_hidden, original_hidden, mixed_input_ids, mixed_position_ids) -> torch.Tensor:
        """
        Mean cosine distance, in the contrastive projection space, between each visual token of the mixed view and
        the word it replaced in the original view: the mean of that word's word-piece states, which span from the
        visual token's position id to the next token's. The word side is the target: no gradient flows into it.
        """
        batch_index, slot_index = (mixed_input_ids == self.config.image_token_id).nonzero(as_tuple=True)
        if mixed_position_ids is None:
            raise ValueError(
                "The patch alignment loss needs the mixed view's `position_ids` (VLMixerProcessor gives them)."
            )
        first = mixed_position_ids[batch_index, slot_index]
        end = mixed_position_ids[batch_index, slot_index + 1]  # a visual token is never last: [SEP] follows it
        prefix_sums = F.pad(original_hidden.detach().cumsum(dim=1), (0, 0, 1, 0))
        words = (prefix_sums[batch_index, end] - prefix_sums[batch_index, first]) / (end - first).unsqueeze(-1)
        patches = F.normalize(self.contrastive.projection(mixed_hidden[batch_index, slot_index]), dim=-1)
        words = F.normalize(self.contrastive.projection(words), dim=-1).detach()
        return global_mean((1.0 - (patches * words).sum(dim=-1)).sum(), torch.tensor(float(len(batch_index))))

    def _text_stream_losses(
        self, mixed: dict, labels, patch_word_labels, original_input_ids, original_attention_mask, **kwargs
    ):
        outputs = self.vlmixer(**mixed, return_dict=True, **kwargs)
        hidden = outputs.last_hidden_state
        losses, embeds = {}, {"hidden_states": outputs.hidden_states, "attentions": outputs.attentions}
        if labels is not None:
            losses["mlm_loss"] = self.token_prediction_loss(hidden, labels)
        if patch_word_labels is not None and any_process(bool((patch_word_labels != IGNORE_INDEX).any()), hidden.device):
            losses["patch_word_loss"] = self.token_prediction_loss(hidden, patch_word_labels)
        config = self.config
        if original_input_ids is None or config.contrastive_loss_weight == config.patch_alignment_loss_weight == 0:
            return losses, embeds
        original_hidden = self.vlmixer(
            input_ids=original_input_ids, attention_mask=original_attention_mask, return_dict=True
        ).last_hidden_state
        if config.contrastive_loss_weight > 0:
            embeds["mixed_embeds"] = self.contrastive(hidden, mixed["attention_mask"])
            embeds["text_embeds"] = self.contrastive(original_hidden, original_attention_mask)
            if self.momentum is None:
                losses["contrastive_loss"] = symmetric_info_nce(
                    embeds["text_embeds"], embeds["mixed_embeds"], self.contrastive.logit_scale
                )
            else:
                original = {"input_ids": original_input_ids, "attention_mask": original_attention_mask}
                losses["contrastive_loss"] = self.momentum_info_nce(
                    embeds["text_embeds"], embeds["mixed_embeds"], original, mixed
                )
        image_tokens = bool((mixed["input_ids"] == config.image_token_id).any())
        if config.patch_alignment_loss_weight > 0 and any_process(image_tokens, hidden.device):
            losses["patch_alignment_loss"] = self.patch_alignment_loss(
                hidden, original_hidden, mixed["input_ids"], mixed["position_ids"]
            )
        return losses, embeds

    def momentum_info_nce(self, text_embeds, mixed_embeds, original: dict, mixed: dict) -> torch.Tensor:
        """
        Symmetric InfoNCE of each view against the momentum encoder's keys of the other view: the global batch's keys
        (positives on the diagonal) and the queue's (negatives only). In training the momentum encoder first follows
        the encoder (`momentum_coefficient`), and this batch's keys enter the queue afterwards.
        """
        momentum = self.momentum
        if self.training or not bool(momentum.initialized):
            momentum.follow(self.vlmixer, self.contrastive, self.config.momentum_coefficient)
        with torch.no_grad():
            text_keys, offset = gather_with_grad(momentum.embed(**original))
            mixed_keys, _ = gather_with_grad(momentum.embed(**mixed))
        queued_text, queued_mixed = momentum.queued()
        targets = torch.arange(text_embeds.shape[0], device=text_embeds.device) + offset
        scale = self.contrastive.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
        text_to_mixed = scale * text_embeds @ torch.cat([mixed_keys, queued_mixed]).T
        mixed_to_text = scale * mixed_embeds @ torch.cat([text_keys, queued_text]).T
        loss_sum = (
            F.cross_entropy(text_to_mixed, targets, reduction="sum")
            + F.cross_entropy(mixed_to_text, targets, reduction="sum")
        ) / 2
        if self.training:
            momentum.enqueue(text_keys, mixed_keys)
        return global_mean(loss_sum, torch.tensor(float(text_embeds.shape[0])))

    def _pair_stream_losses(self, pair_batch: dict) -> dict:
        hidden = self.vlmixer(**sub_batch_inputs(pair_batch), return_dict=True).last_hidden_state
        losses = {"paired_mlm_loss": self.token_prediction_loss(hidden, pair_batch["labels"])}
        config = self.config
        contrast, matching = config.paired_contrastive_loss_weight > 0, config.paired_matching_loss_weight > 0
        if "caption_input_ids" not in pair_batch or not (contrast or matching):
            return losses
        regions = ImageRegions(
            pair_batch["visual_features"],
            pair_batch.get("visual_boxes"),
            (pair_batch["image_input_ids"] == self.config.image_token_id).sum(dim=1),
        )
        with torch.set_grad_enabled(contrast and torch.is_grad_enabled()):  # matching alone only samples from them
            captions = self.sentence_embeddings(
                input_ids=pair_batch["caption_input_ids"], attention_mask=pair_batch["caption_attention_mask"]
            )
            images = self.sentence_embeddings(
                input_ids=pair_batch["image_input_ids"],
                attention_mask=pair_batch["image_attention_mask"],
                visual_features=regions.features,
                visual_boxes=regions.boxes,
            )
        if contrast:
            losses["paired_contrastive_loss"] = symmetric_info_nce(captions, images, self.contrastive.logit_scale)
        if matching:
            losses["paired_matching_loss"] = self.hard_negative_matching_loss(
                pair_batch["caption_input_ids"], pair_batch["caption_attention_mask"], regions, captions, images
            )
        return losses

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        visual_features: torch.Tensor | None = None,
        visual_boxes: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        patch_word_labels: torch.Tensor | None = None,
        original_input_ids: torch.Tensor | None = None,
        original_attention_mask: torch.Tensor | None = None,
        tag_batch: dict[str, torch.Tensor] | None = None,
        pair_batch: dict[str, torch.Tensor] | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | VLMixerForPreTrainingOutput:
        r"""
        input_ids, attention_mask, position_ids, visual_features, visual_boxes: the mixed view (`VLMixerProcessor`).
        labels (`(batch_size, sequence_length)`): masked-LM targets on the mixed view, -100 elsewhere.
        patch_word_labels (`(batch_size, sequence_length)`): at visual tokens, the first word piece each replaced.
        original_input_ids, original_attention_mask: the original view, the contrastive positive of the mixed view.
        tag_batch, pair_batch (`dict`): the image-only and paired streams (see the class docstring).
        output_hidden_states, output_attentions, return_dict: as in every transformers model; the hidden states and
            attentions are those of the mixed view.
        """
        unexpected = sorted(set(kwargs) - set(TransformersKwargs.__annotations__))
        if unexpected:
            raise TypeError(f"VLMixerForPreTraining got unexpected inputs {unexpected}.")
        kwargs = {name: kwargs[name] for name in ("output_hidden_states", "output_attentions") if name in kwargs}
        losses, embeds = {}, {}
        if input_ids is not None:
            mixed = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         visual_features=visual_features, visual_boxes=visual_boxes)  # fmt: skip
            losses, embeds = self._text_stream_losses(
                mixed, labels, patch_word_labels, original_input_ids, original_attention_mask, **kwargs
            )
        if tag_batch is not None:
            hidden = self.vlmixer(**sub_batch_inputs(tag_batch), return_dict=True).last_hidden_state
            losses["tag_mlm_loss"] = self.token_prediction_loss(hidden, tag_batch["labels"])
        if pair_batch is not None:
            losses.update(self._pair_stream_losses(pair_batch))
        if not losses:
            raise ValueError(
                "The batch carries no stream with targets: pass labels, original_input_ids, tag_batch or pair_batch."
            )
        total = sum(getattr(self.config, f"{name}_weight") * value for name, value in losses.items())
        if torch.is_grad_enabled():
            total = total + self._idle_heads_term()
        return VLMixerForPreTrainingOutput(
            loss=total, logit_scale=self.contrastive.logit_scale.detach(), **losses, **embeds
        )


# ---------------------------------------------------------------------------------------------- downstream heads


def classifier_dropout(config: VLMixerConfig) -> nn.Dropout:
    """BERT's rule: `classifier_dropout`, or `hidden_dropout_prob` when it is unset."""
    return nn.Dropout(
        config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
    )


def pooled_classifier(input_size: int, hidden_size: int, num_labels: int, layer_norm_eps: float) -> nn.Sequential:
    """ViLT's classifier: (..., input_size) -> Linear, LayerNorm, GELU (hidden_size), Linear -> (..., num_labels)."""
    return nn.Sequential(
        nn.Linear(input_size, hidden_size),
        nn.LayerNorm(hidden_size, eps=layer_norm_eps),
        nn.GELU(),
        nn.Linear(hidden_size, num_labels),
    )


def pair_features(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """
    (B, H) pooled states of the two images -> (B, 4H): both, their product and their absolute difference.

    Statements about two scenes are mostly comparisons ("only one contains a bag", "the same number of shoes"):
    XOR-like in the two states, which a classifier of their concatenation alone (ViLT's) must build in its hidden
    layer from a gradient that is zero at the start; it stayed at chance on such a problem (tests/test_heads_learn.py).
    The product and the difference make agreement between the two states linear, as in InferSent's pair features.
    """
    return torch.cat([first, second, first * second, (first - second).abs()], dim=-1)


def one_answer_prior_logit(num_labels: int) -> float:
    """The logit whose sigmoid is 1 / num_labels: the score of each answer when one answer of all is right."""
    return -math.log(max(num_labels - 1, 1))


def _check_labels_shape(labels: torch.Tensor, shape: tuple, what: str) -> None:
    if tuple(labels.shape) != tuple(shape):
        raise ValueError(f"`labels` must have shape {tuple(shape)} ({what}), got {tuple(labels.shape)}.")


@dataclass
class VLMixerImageTextRetrievalOutput(ModelOutput):
    r"""
    loss (`()`): `matching_loss` with 0/1 `labels`; for matched pairs (`return_loss=True`) the weighted sum
        `paired_contrastive_loss_weight * contrastive_loss + paired_matching_loss_weight * matching_loss`.
    contrastive_loss: symmetric InfoNCE between the texts and the images of the batch.
    matching_loss: cross-entropy of the matching head (with hard negatives for matched pairs).
    logits (`(batch_size, 2)`): matching logits of text i with image i (column 1: matched); rank candidates by
        `logits.softmax(-1)[:, 1]` (or `logits[:, 1]`) for the second, fine stage of retrieval.
    logits_per_text (`(batch_size, batch_size)`): scaled cosine similarities of every text with every image (the fast
        first stage); `logits_per_image` is its transpose.
    text_embeds, image_embeds (`(batch_size, projection_dim)`): unit embeddings (`get_text_features`,
        `get_image_features`).
    hidden_states, attentions: the encoder's on the pairs `[CLS] text i [SEP] regions of image i [SEP]` (the
        matching pass), with `output_hidden_states` / `output_attentions`.
    """

    loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    matching_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class VLMixerForImageTextRetrieval(VLMixerImageTextMixin, VLMixerPreTrainedModel):
    r"""
    Image-text retrieval in two stages: unit embeddings of texts (`get_text_features`) and of images
    (`get_image_features`, the image as `[CLS] regions [SEP]`) for a fast first-stage search, and a matching score on
    the pooled [CLS] of `[CLS] text [SEP] regions [SEP]` to re-rank the best candidates (`matching_logits`).

    Its modules have the names and shapes of `VLMixerForPreTraining`'s (encoder with pooler, `contrastive`,
    `matching`): `VLMixerForImageTextRetrieval.from_pretrained(pretraining_folder)` keeps them all.

    transformers has no Auto class for retrieval: import this class (or, as remote code from a saved folder,
    `get_class_from_dynamic_module("modeling_vlmixer.VLMixerForImageTextRetrieval", folder)`).
    """

    _auto_class = None

    def __init__(self, config: VLMixerConfig):
        super().__init__(config)
        self.vlmixer = VLMixerModel(config)
        self.contrastive = VLMixerContrastiveHead(config)
        self.matching = VLMixerMatchingHead(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        visual_features: torch.Tensor | None = None,
        visual_boxes: torch.Tensor | None = None,
        region_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_loss: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | VLMixerImageTextRetrievalOutput:
        r"""
        input_ids, attention_mask (`(batch_size, text_length)`): the texts alone, `[CLS] text [SEP]` (the processor's
            `processor(text=..., cmc_ratio=0.0)`), padded at the end; texts padded at the start are moved to that
            layout first and give the same outputs.
        visual_features (`(batch_size, num_regions, visual_feature_dim)`), visual_boxes (`(batch_size, num_regions,
            4)`), region_mask (`(batch_size, num_regions)`), pixel_values (`(batch_size, num_regions, 3, height,
            width)`): the images, one row of regions per image, padded (see `image_regions`); image i goes with text i.
        labels (`(batch_size,)`, *optional*): 1 where text i matches image i, 0 where not: cross-entropy of the
            matching head on these pairs.
        return_loss (`bool`, *optional*): without `labels`, the pairs are matched (text i describes image i): the loss
            is image-text contrast plus matching with hard negatives drawn from the contrastive similarities (ALBEF).
        """
        regions = self.image_regions(visual_features, visual_boxes, region_mask, pixel_values)
        if len(regions.counts) != len(input_ids):
            raise ValueError(f"Got {len(input_ids)} texts but {len(regions.counts)} images; pass one image per text.")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        input_ids, attention_mask = padding_at_the_end(input_ids, attention_mask)
        text_embeds = self.sentence_embeddings(input_ids=input_ids, attention_mask=attention_mask)
        image_embeds = self.region_embeddings(regions)
        logits_per_text = self.contrastive.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp() * text_embeds @ image_embeds.T
        logits, pair_outputs = self.match_pairs(input_ids, attention_mask, regions, **kwargs)
        loss = contrastive_loss = matching_loss = None
        if labels is not None:
            _check_labels_shape(labels, (len(input_ids),), "1 for a matching text-image pair, 0 for a mismatch")
            if not bool(((labels == 0) | (labels == 1)).all()):
                raise ValueError("Matching `labels` must be 0 (no match) or 1 (match).")
            loss = matching_loss = F.cross_entropy(logits.float(), labels.long())
        elif return_loss:
            if len(input_ids) < 2:
                raise ValueError("Matched pairs need a batch of at least 2 to draw negatives from.")
            contrastive_loss = symmetric_info_nce(text_embeds, image_embeds, self.contrastive.logit_scale)
            matching_loss = self.hard_negative_matching_loss(
                input_ids, attention_mask, regions, text_embeds, image_embeds
            )
            loss = (
                self.config.paired_contrastive_loss_weight * contrastive_loss
                + self.config.paired_matching_loss_weight * matching_loss
            )
        return VLMixerImageTextRetrievalOutput(
            loss=loss,
            contrastive_loss=contrastive_loss,
            matching_loss=matching_loss,
            logits=logits,
            logits_per_text=logits_per_text,
            logits_per_image=logits_per_text.T,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            hidden_states=pair_outputs.hidden_states,
            attentions=pair_outputs.attentions,
        )


class VLMixerForQuestionAnswering(VLMixerPreTrainedModel):
    r"""
    Visual question answering as multi-label classification over an answer vocabulary (`config.num_labels`,
    `config.id2label`) on the pooled [CLS] of `[CLS] question [SEP] regions [SEP]`, with VQA's soft scores as targets
    and ViLT's loss (binary cross-entropy with logits times the number of answers).
    `AutoModelForVisualQuestionAnswering`.
    """

    _auto_class = "AutoModelForVisualQuestionAnswering"

    def __init__(self, config: VLMixerConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vlmixer = VLMixerModel(config)
        self.dropout = classifier_dropout(config)
        self.classifier = pooled_classifier(
            config.hidden_size, 2 * config.hidden_size, config.num_labels, config.layer_norm_eps
        )
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self.classifier[-1]:
            # Every answer starts at the score of one answer in num_labels, not 0.5 (RetinaNet's prior). From a zero
            # bias, the binary cross-entropy (starting at num_labels * ln 2) first spends its steps pushing every
            # logit down together, and a short fine-tuning ends in that phase, one answer for every question.
            init.constant_(module.bias, one_answer_prior_logit(self.config.num_labels))

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        visual_features: torch.Tensor | None = None,
        visual_boxes: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor] | SequenceClassifierOutput:
        r"""
        input_ids, attention_mask, token_type_ids, visual_features (`(num_regions_in_batch, visual_feature_dim)`),
            visual_boxes: `[CLS] question [SEP] regions [SEP]` as the processor makes it
            (`processor(text=questions, region_features=..., boxes=...)`).
        labels (`(batch_size, num_labels)`, *optional*): the soft score of every answer (VQA: min(1, annotators / 3)),
            0 for answers nobody gave.
        Returns logits (`(batch_size, num_labels)`); `config.id2label[logits.argmax(-1)]` is the answer.
        """
        outputs = self.vlmixer(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            visual_features=visual_features,
            visual_boxes=visual_boxes,
            pixel_values=pixel_values,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None
        if labels is not None:
            _check_labels_shape(labels, logits.shape, "a soft score per answer")
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels.to(torch.float32)) * labels.shape[1]
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class VLMixerForVisualReasoning(VLMixerPreTrainedModel):
    r"""
    Visual reasoning over two images (NLVR2): the statement is encoded with each image as `[CLS] statement [SEP]
    regions [SEP]`; the two pooled [CLS] states (image 1 first), their product and their absolute difference
    (`pair_features`) are classified (`config.num_labels`, 2 for true / false) by ViLT's classifier.

    Inputs stack the two pairs of an example in a dimension of size 2 after the batch: `input_ids (batch_size, 2,
    length)`, and `visual_features (N, D)` hold the regions in the order of `input_ids.view(2 * batch_size, length)`
    (example 0 with image 1, example 0 with image 2, example 1 with image 1, ...). The processor makes exactly that
    from the statements repeated twice: `processor(text=[s0, s0, s1, s1], region_features=[a0, b0, a1, b1])`, then
    `input_ids.view(-1, 2, length)` (same for `attention_mask` and `token_type_ids`).

    transformers has no Auto class for this task: import this class (or, as remote code from a saved folder,
    `get_class_from_dynamic_module("modeling_vlmixer.VLMixerForVisualReasoning", folder)`).
    """

    _auto_class = None
    num_images = 2

    def __init__(self, config: VLMixerConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vlmixer = VLMixerModel(config)
        self.dropout = classifier_dropout(config)
        self.classifier = pooled_classifier(
            4 * config.hidden_size, self.num_images * config.hidden_size, config.num_labels, config.layer_norm_eps
        )
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        visual_features: torch.Tensor | None = None,
        visual_boxes: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor] | SequenceClassifierOutput:
        r"""
        input_ids, attention_mask, token_type_ids, position_ids (`(batch_size, 2, length)`): each example's statement
            with its first and with its second image (see the class docstring for the order of `visual_features`).
        labels (`(batch_size,)`, *optional*): class ids (NLVR2: 1 true, 0 false).
        Returns logits (`(batch_size, num_labels)`); hidden states and attentions have a leading `2 * batch_size`.
        """
        if input_ids is None or input_ids.dim() != 3 or input_ids.shape[1] != self.num_images:
            shape = None if input_ids is None else tuple(input_ids.shape)
            raise ValueError(
                f"`input_ids` must have shape (batch_size, {self.num_images}, length): the statement with each of the "
                f"{self.num_images} images; got {shape}."
            )
        batch_size, _, length = input_ids.shape

        def flat(tensor):
            if tensor is None:
                return None
            if tuple(tensor.shape) != tuple(input_ids.shape):
                raise ValueError(
                    f"Pair inputs must have the shape of `input_ids` {tuple(input_ids.shape)}, "
                    f"got {tuple(tensor.shape)}."
                )
            return tensor.reshape(batch_size * self.num_images, length)

        outputs = self.vlmixer(
            flat(input_ids),
            attention_mask=flat(attention_mask),
            token_type_ids=flat(token_type_ids),
            position_ids=flat(position_ids),
            visual_features=visual_features,
            visual_boxes=visual_boxes,
            pixel_values=pixel_values,
            return_dict=True,
            **kwargs,
        )
        pooled = outputs.pooler_output.reshape(batch_size, self.num_images, self.config.hidden_size)
        logits = self.classifier(self.dropout(pair_features(pooled[:, 0], pooled[:, 1])))
        loss = None
        if labels is not None:
            _check_labels_shape(labels, (batch_size,), "a class id per example")
            loss = F.cross_entropy(logits.float(), labels.long())
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class VLMixerForSequenceClassification(VLMixerPreTrainedModel):
    r"""
    Image-text classification (visual entailment, ...) on the pooled [CLS] of `[CLS] text [SEP] regions [SEP]`, as
    `BertForSequenceClassification`: `config.num_labels` classes, `config.problem_type` regression, single- or
    multi-label (inferred from the labels when unset). Text alone works too. `AutoModelForSequenceClassification`.
    """

    _auto_class = "AutoModelForSequenceClassification"

    def __init__(self, config: VLMixerConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vlmixer = VLMixerModel(config)
        self.dropout = classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        visual_features: torch.Tensor | None = None,
        visual_boxes: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor] | SequenceClassifierOutput:
        r"""
        input_ids, ..., visual_boxes: `[CLS] text [SEP] regions [SEP]` as the processor makes it.
        labels (`(batch_size,)` class ids, `(batch_size, num_labels)` multi-label 0/1, or floats for regression).
        Returns logits (`(batch_size, num_labels)`).
        """
        outputs = self.vlmixer(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            visual_features=visual_features,
            visual_boxes=visual_boxes,
            pixel_values=pixel_values,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None
        if labels is not None:
            if self.config.problem_type is None:
                if self.num_labels == 1:
                    self.config.problem_type = "regression"
                elif labels.dtype in (torch.long, torch.int):
                    self.config.problem_type = "single_label_classification"
                else:
                    self.config.problem_type = "multi_label_classification"
            if self.config.problem_type == "regression":
                loss_fct = MSELoss()
                loss = (
                    loss_fct(logits.squeeze(), labels.squeeze()) if self.num_labels == 1 else loss_fct(logits, labels)
                )
            elif self.config.problem_type == "single_label_classification":
                loss = CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
            else:
                _check_labels_shape(labels, logits.shape, "0/1 per class for multi-label classification")
                loss = BCEWithLogitsLoss()(logits, labels.to(logits.dtype))
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class VLMixerForCaptioning(VLMixerPreTrainedModelWithMLMHead, GenerationMixin):
    r"""
    Image captioning (Oscar / VinVL recipe): the image comes first as `[CLS] regions [SEP]`, then the caption
    `[CLS] w1 ... wn [SEP]` (the caption's own [CLS] starts it); a per-example attention mask keeps the caption causal
    (each word sees the regions and the words before it) while the regions see each other only, so no later word can
    change an earlier prediction. Trained with the next-token loss on the caption through the tied MLM head; generates
    with `GenerationMixin.generate` (greedy, beam search, sampling), recomputing the whole sequence at every step (no
    key-value cache). `AutoModelForImageTextToText`.

    ```python
    >>> captions = model.generate(visual_features=features, region_mask=mask, num_beams=3, max_new_tokens=20)
    >>> tokenizer.batch_decode(captions, skip_special_tokens=True)
    ```
    """

    _auto_class = "AutoModelForImageTextToText"

    def __init__(self, config: VLMixerConfig):
        super().__init__(config)
        self.post_init()
        self.use_caption_generation_defaults()

    def use_caption_generation_defaults(self) -> None:
        """A caption starts with [CLS] and ends with [SEP] (or the config's `bos_token_id` / `eos_token_id` when set);
        every step recomputes the sequence, so no cache."""
        config = self.config
        self.generation_config.bos_token_id = config.bos_token_id if config.bos_token_id is not None else config.cls_token_id
        self.generation_config.eos_token_id = config.eos_token_id if config.eos_token_id is not None else config.sep_token_id
        self.generation_config.pad_token_id = config.pad_token_id
        self.generation_config.use_cache = False

    def never_generated_token_ids(self) -> list[int]:
        """Tokens a caption never holds after its start: the visual placeholder, [CLS] (and the start token), padding."""
        config = self.config
        eos = config.eos_token_id if config.eos_token_id is not None else config.sep_token_id
        eos = set(eos) if isinstance(eos, list) else {eos}
        never = {config.image_token_id, config.cls_token_id, config.pad_token_id, config.bos_token_id}
        return sorted(token for token in never if token is not None and token not in eos)

    def generate(self, *args, **kwargs):
        """`GenerationMixin.generate`, never emitting the visual placeholder or another special token (see
        `never_generated_token_ids`): they are added to `suppress_tokens`, whatever the generation config says."""
        generation_config = kwargs.get("generation_config") or self.generation_config
        requested = kwargs.get("suppress_tokens", generation_config.suppress_tokens) or []
        kwargs["suppress_tokens"] = sorted(set(requested) | set(self.never_generated_token_ids()))
        return super().generate(*args, **kwargs)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        # A folder without generation_config.json (a pre-training checkpoint) gets one derived from the config, which
        # has no start token.
        if model.generation_config.bos_token_id is None:
            model.use_caption_generation_defaults()
        return loaded

    def caption_attention_mask(self, image_mask: torch.Tensor, caption_mask: torch.Tensor) -> torch.Tensor:
        """
        (B, P) image-part and (B, T) caption masks -> (B, P + T, P + T): a query of the image part sees the image part;
        a caption query sees the image part and the caption up to itself; padding is seen by nobody.
        """
        image_length = image_mask.shape[1]
        keys = torch.cat([image_mask, caption_mask.to(image_mask.dtype)], dim=1).bool()
        index = torch.arange(keys.shape[1], device=keys.device)
        in_image = index < image_length
        visible = in_image.unsqueeze(0) | ((index.unsqueeze(0) <= index.unsqueeze(1)) & ~in_image.unsqueeze(1))
        return visible.unsqueeze(0) & keys.unsqueeze(1)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        visual_features: torch.Tensor | None = None,
        visual_boxes: torch.Tensor | None = None,
        region_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        shift_labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor] | CausalLMOutput:
        r"""
        input_ids, attention_mask (`(batch_size, caption_length)`): the captions so far, `[CLS] w1 ... [SEP]` (the
            tokenizer's output), without visual placeholders.
        visual_features (`(batch_size, num_regions, visual_feature_dim)`), visual_boxes, region_mask, pixel_values:
            the images, one row of regions per image (see `image_regions`).
        labels (`(batch_size, caption_length)`, *optional*): usually `input_ids` with -100 at padding; the model shifts
            them, so that position t is trained to predict token t + 1.
        shift_labels (`(batch_size, caption_length)`, *optional*): labels already shifted (position t holds the target
            of position t, -100 where nothing is predicted), as transformers' causal-LM losses take them (context
            parallelism shifts before splitting the sequence); used instead of `labels`.
        Returns logits (`(batch_size, caption_length, vocab_size)`) at the caption positions; hidden states and
            attentions cover the image part too (`num_regions + 2` positions first).
        """
        if input_ids is None:
            raise ValueError("`input_ids` (the caption so far, at least its [CLS]) are required.")
        if bool((input_ids == self.config.image_token_id).any()):
            raise ValueError(
                "Captions hold no visual placeholders: pass the image as `visual_features` / `pixel_values`."
            )
        regions = self.image_regions(visual_features, visual_boxes, region_mask, pixel_values)
        if len(regions.counts) != len(input_ids):
            raise ValueError(
                f"Got {len(input_ids)} captions but {len(regions.counts)} images; pass one image per caption."
            )
        image = image_sequence_inputs(regions.counts, self.config)
        caption_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        keys = torch.cat([image["attention_mask"], caption_mask.to(image["attention_mask"].dtype)], dim=1)
        outputs = self.vlmixer(
            torch.cat([image["input_ids"], input_ids], dim=1),
            attention_mask=self.caption_attention_mask(image["attention_mask"], caption_mask),
            position_ids=(keys.cumsum(dim=1) - 1).clamp(min=0),  # padding between image and caption takes no place
            visual_features=regions.features,
            visual_boxes=regions.boxes,
            return_dict=True,
            **kwargs,
        )
        logits = self.cls(outputs.last_hidden_state[:, image["input_ids"].shape[1] :])
        loss = None
        if shift_labels is not None:
            _check_labels_shape(shift_labels, input_ids.shape, "the target of each position, -100 where none")
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), shift_labels.reshape(-1), ignore_index=IGNORE_INDEX
            )
        elif labels is not None:
            _check_labels_shape(labels, input_ids.shape, "the caption's token ids, -100 where nothing is predicted")
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                labels[:, 1:].reshape(-1),
                ignore_index=IGNORE_INDEX,
            )
        return CausalLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        visual_features: torch.Tensor | None = None,
        visual_boxes: torch.Tensor | None = None,
        region_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        **kwargs,
    ) -> dict:
        """
        The whole caption so far and the images, at every step, and every other keyword passed on unchanged, as
        `GenerationMixin.prepare_inputs_for_generation` does (`forward` takes any keyword: its own arguments,
        transformers' kwargs and model-specific ones ride on to the encoder). Not passed on: `generate`'s cache inputs
        (no cache: every step recomputes the prefix), `position_ids` (`forward` numbers the image part and the caption
        itself) and the training targets.
        """
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, visual_features=visual_features,
                      visual_boxes=visual_boxes, region_mask=region_mask, pixel_values=pixel_values)  # fmt: skip
        not_passed = {"labels", "shift_labels", "position_ids", "next_sequence_length", *GENERATION_CACHE_INPUTS}
        inputs.update(
            {name: value for name, value in kwargs.items() if name not in not_passed and value is not None}
        )
        return inputs


__all__ = [
    "AUTO_MAP",
    "VLMixerForCaptioning",
    "VLMixerForImageTextRetrieval",
    "VLMixerForMaskedLM",
    "VLMixerForPreTraining",
    "VLMixerForPreTrainingOutput",
    "VLMixerForQuestionAnswering",
    "VLMixerForSequenceClassification",
    "VLMixerForVisualReasoning",
    "VLMixerImageTextRetrievalOutput",
    "VLMixerModel",
    "VLMixerPreTrainedModel",
]
