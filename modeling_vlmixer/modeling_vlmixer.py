"""PyTorch VLMixer: a single-stream BERT encoder over interleaved word tokens and visual tokens.

A visual token is one image region (a patch pasted into a sentence by cross-modal CutMix, or a region of a whole
image appended after the text). In `input_ids` it is the placeholder `config.image_token_id`; its embedding is the
projected region feature plus its box geometry and a modality embedding, scattered into the placeholder's row.

The transformer layers are BERT's own (`transformers.models.bert`), so a VLMixer initialised from a BERT checkpoint
computes exactly what that BERT computes on text without visual tokens.
"""

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import CrossEntropyLoss
from torch.nn import functional as F

from transformers import AutoConfig, AutoModel, BertModel, PreTrainedModel
from transformers import initialization as init
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling, MaskedLMOutput
from transformers.models.bert.modeling_bert import (
    BertEmbeddings,
    BertEncoder,
    BertLayer,
    BertLMPredictionHead,
    BertPooler,
    BertSelfAttention,
)
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple, logging
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_vlmixer import VLMixerConfig
from .efficientnet_lite import EfficientNetLite0, load_imagenet_state_dict


logger = logging.get_logger(__name__)

# Every Auto class a saved folder answers to; `save_pretrained` writes them all into `config.auto_map` so that
# people who never installed this package can load any head with `trust_remote_code=True`.
AUTO_MAP = {
    "AutoConfig": "configuration_vlmixer.VLMixerConfig",
    "AutoModel": "modeling_vlmixer.VLMixerModel",
    "AutoModelForMaskedLM": "modeling_vlmixer.VLMixerForMaskedLM",
    "AutoModelForPreTraining": "modeling_vlmixer.VLMixerForPreTraining",
}
IGNORE_INDEX = -100
MAX_LOGIT_SCALE = 4.6052  # ln(100), CLIP's bound on the inverse temperature


def box_geometry(boxes: torch.Tensor, box_dim: int) -> torch.Tensor:
    """(N, 4) normalised x1, y1, x2, y2 -> (N, box_dim): the corners, then width and height when box_dim is 6."""
    if box_dim == 4:
        return boxes
    return torch.cat([boxes, boxes[:, 2:3] - boxes[:, 0:1], boxes[:, 3:4] - boxes[:, 1:2]], dim=-1)


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
        """input_ids (B, L) with placeholders; visual_features (N, D) and visual_boxes (N, 4) in placeholder order."""
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if visual_features is not None:
            visual_embeds = self.visual(visual_features.to(inputs_embeds.dtype), visual_boxes.to(inputs_embeds.dtype))
            placeholders = (input_ids == self.image_token_id).unsqueeze(-1)
            inputs_embeds = inputs_embeds.masked_scatter(placeholders, visual_embeds)
        return super().forward(token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds)


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

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Saves as `PreTrainedModel` does, with every Auto class in `auto_map` so the folder loads as remote code."""
        self.config.auto_map = {**AUTO_MAP, **(getattr(self.config, "auto_map", None) or {})}
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, loading info) with output_loading_info
        # Loading replaces the backbone's parameters with fresh, trainable ones; it is frozen by design.
        backbone = getattr(model.base_model, "vision_backbone", None)
        if backbone is not None:
            backbone.requires_grad_(False)
        return loaded

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

    def _visual_inputs(
        self,
        input_ids: torch.Tensor | None,
        visual_features: torch.Tensor | None,
        visual_boxes: torch.Tensor | None,
        pixel_values: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Checks the visual inputs against the placeholders and returns (features (N, D), boxes (N, 4)) or Nones."""
        if pixel_values is not None:
            if visual_features is not None:
                raise ValueError("Pass either `visual_features` or `pixel_values`, not both.")
            visual_features = self.get_visual_features(pixel_values)
        num_placeholders = 0 if input_ids is None else int((input_ids == self.config.image_token_id).sum())
        num_features = 0 if visual_features is None else visual_features.shape[0]
        if num_placeholders != num_features:
            raise ValueError(
                f"`input_ids` hold {num_placeholders} visual placeholders (image_token_id="
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
        if not torch.isfinite(visual_features).all():
            raise ValueError("`visual_features` contain NaN or infinite values.")
        if visual_boxes is None:
            # A patch given without its box is taken as a whole image.
            visual_boxes = visual_features.new_tensor([0.0, 0.0, 1.0, 1.0]).expand(num_features, 4)
        elif visual_boxes.shape != (num_features, 4):
            raise ValueError(f"`visual_boxes` must have shape ({num_features}, 4), got {tuple(visual_boxes.shape)}.")
        elif not torch.isfinite(visual_boxes).all():
            raise ValueError("`visual_boxes` contain NaN or infinite values.")
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
        """
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        visual_features, visual_boxes = self._visual_inputs(input_ids, visual_features, visual_boxes, pixel_values)
        embedding_output = self.embeddings(
            input_ids=input_ids,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            visual_features=visual_features,
            visual_boxes=visual_boxes,
        )
        attention_mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=embedding_output, attention_mask=attention_mask
        )
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

    def __init__(self, config: VLMixerConfig):
        super().__init__(config)
        self.vlmixer = VLMixerModel(config, add_pooling_layer=False)
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


class GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward returns to each process the gradient that every process computed for its rows."""

    @staticmethod
    def forward(ctx, embeddings: torch.Tensor) -> torch.Tensor:
        gathered = [torch.empty_like(embeddings) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, embeddings.contiguous())
        return torch.cat(gathered, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.contiguous()
        dist.all_reduce(grad)
        rows = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * rows : (dist.get_rank() + 1) * rows]


def gather_with_grad(embeddings: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(B, P) local rows -> (world * B, P) rows of all processes, gradients flowing back; and this process's offset."""
    if not is_distributed():
        return embeddings, 0
    return GatherWithGrad.apply(embeddings), dist.get_rank() * embeddings.shape[0]


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
    text_embeds, mixed_embeds (`(batch_size, projection_dim)`): the unit sentence embeddings of both views.
    """

    loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    patch_word_loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    patch_alignment_loss: torch.FloatTensor | None = None
    tag_mlm_loss: torch.FloatTensor | None = None
    paired_mlm_loss: torch.FloatTensor | None = None
    paired_contrastive_loss: torch.FloatTensor | None = None
    logit_scale: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    mixed_embeds: torch.FloatTensor | None = None


def sub_batch_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder inputs of a stream's sub-batch (its labels and extra views left out)."""
    names = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "visual_features", "visual_boxes")
    return {name: batch[name] for name in names if batch.get(name) is not None}


class VLMixerForPreTraining(VLMixerPreTrainedModelWithMLMHead):
    """
    VLMixer pre-training. One forward computes the losses of whichever streams the batch carries:

    - visually-aided language pre-training on text-only sentences after cross-modal CutMix (the collator's output):
      `mlm_loss` on the masked mixed view, `patch_word_loss` at the visual tokens, `contrastive_loss` between
      the original view (`original_input_ids`) and the mixed view, and `patch_alignment_loss` pulling each visual
      token towards the word it replaced in the space the contrastive embeddings live in;
    - tag-aided visual pre-training (`tag_batch`: `[CLS] tags [SEP] regions [SEP]` with masked tags and `labels`);
    - paired data (`pair_batch`: caption and regions with masked caption `labels`, plus `caption_input_ids` /
      `caption_attention_mask` and `image_input_ids` / `image_attention_mask` for image-text contrast).

    Vocabulary logits are computed only at labelled positions.
    """

    _auto_class = "AutoModelForPreTraining"

    def __init__(self, config: VLMixerConfig):
        super().__init__(config)
        self.contrastive = VLMixerContrastiveHead(config)
        self.post_init()

    def token_prediction_loss(self, hidden_states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the vocabulary at the labelled positions of (B, L, H) only: (M, vocab) logits, not (B, L, vocab)."""
        selected = labels != IGNORE_INDEX
        logits = self.cls(hidden_states[selected]).float()
        return global_mean(F.cross_entropy(logits, labels[selected], reduction="sum"), selected.sum())

    def sentence_embeddings(self, **inputs) -> torch.Tensor:
        """(B, projection_dim) unit embeddings of sequences (words and visual tokens) for contrast and retrieval."""
        hidden = self.vlmixer(**inputs).last_hidden_state
        return self.contrastive(hidden, inputs["attention_mask"])

    def patch_alignment_loss(self, mixed_hidden, original_hidden, mixed_input_ids, mixed_position_ids) -> torch.Tensor:
        """
        Mean cosine distance, in the contrastive projection space, between each visual token of the mixed view and
        the word it replaced in the original view: the mean of that word's word-piece states, which span from the
        visual token's position id to the next token's. The word side is the target: no gradient flows into it.
        """
        batch_index, slot_index = (mixed_input_ids == self.config.image_token_id).nonzero(as_tuple=True)
        if mixed_position_ids is None:
            raise ValueError("The patch alignment loss needs the mixed view's `position_ids` (VLMixerProcessor gives them).")
        first = mixed_position_ids[batch_index, slot_index]
        end = mixed_position_ids[batch_index, slot_index + 1]  # a visual token is never last: [SEP] follows it
        prefix_sums = F.pad(original_hidden.detach().cumsum(dim=1), (0, 0, 1, 0))
        words = (prefix_sums[batch_index, end] - prefix_sums[batch_index, first]) / (end - first).unsqueeze(-1)
        patches = F.normalize(self.contrastive.projection(mixed_hidden[batch_index, slot_index]), dim=-1)
        words = F.normalize(self.contrastive.projection(words), dim=-1).detach()
        return global_mean((1.0 - (patches * words).sum(dim=-1)).sum(), torch.tensor(float(len(batch_index))))

    def _text_stream_losses(self, mixed: dict, labels, patch_word_labels, original_input_ids, original_attention_mask):
        hidden = self.vlmixer(**mixed).last_hidden_state
        losses, embeds = {}, {}
        if labels is not None:
            losses["mlm_loss"] = self.token_prediction_loss(hidden, labels)
        if patch_word_labels is not None and bool((patch_word_labels != IGNORE_INDEX).any()):
            losses["patch_word_loss"] = self.token_prediction_loss(hidden, patch_word_labels)
        config = self.config
        if original_input_ids is None or config.contrastive_loss_weight == config.patch_alignment_loss_weight == 0:
            return losses, embeds
        original_hidden = self.vlmixer(input_ids=original_input_ids, attention_mask=original_attention_mask).last_hidden_state
        if config.contrastive_loss_weight > 0:
            embeds["mixed_embeds"] = self.contrastive(hidden, mixed["attention_mask"])
            embeds["text_embeds"] = self.contrastive(original_hidden, original_attention_mask)
            losses["contrastive_loss"] = symmetric_info_nce(
                embeds["text_embeds"], embeds["mixed_embeds"], self.contrastive.logit_scale
            )
        if config.patch_alignment_loss_weight > 0 and bool((mixed["input_ids"] == config.image_token_id).any()):
            losses["patch_alignment_loss"] = self.patch_alignment_loss(
                hidden, original_hidden, mixed["input_ids"], mixed["position_ids"]
            )
        return losses, embeds

    def _pair_stream_losses(self, pair_batch: dict) -> dict:
        hidden = self.vlmixer(**sub_batch_inputs(pair_batch)).last_hidden_state
        losses = {"paired_mlm_loss": self.token_prediction_loss(hidden, pair_batch["labels"])}
        if "caption_input_ids" in pair_batch and self.config.paired_contrastive_loss_weight > 0:
            captions = self.sentence_embeddings(
                input_ids=pair_batch["caption_input_ids"], attention_mask=pair_batch["caption_attention_mask"]
            )
            images = self.sentence_embeddings(
                input_ids=pair_batch["image_input_ids"],
                attention_mask=pair_batch["image_attention_mask"],
                visual_features=pair_batch["visual_features"],
                visual_boxes=pair_batch.get("visual_boxes"),
            )
            losses["paired_contrastive_loss"] = symmetric_info_nce(captions, images, self.contrastive.logit_scale)
        return losses

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
        **kwargs,
    ) -> VLMixerForPreTrainingOutput:
        r"""
        input_ids, attention_mask, position_ids, visual_features, visual_boxes: the mixed view (`VLMixerProcessor`).
        labels (`(batch_size, sequence_length)`): masked-LM targets on the mixed view, -100 elsewhere.
        patch_word_labels (`(batch_size, sequence_length)`): at visual tokens, the first word piece each replaced.
        original_input_ids, original_attention_mask: the original view, the contrastive positive of the mixed view.
        tag_batch, pair_batch (`dict`): the image-only and paired streams (see the class docstring).
        """
        if kwargs:
            raise TypeError(f"VLMixerForPreTraining got unexpected inputs {sorted(kwargs)}.")
        losses, embeds = {}, {}
        if input_ids is not None:
            mixed = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         visual_features=visual_features, visual_boxes=visual_boxes)  # fmt: skip
            losses, embeds = self._text_stream_losses(
                mixed, labels, patch_word_labels, original_input_ids, original_attention_mask
            )
        if tag_batch is not None:
            hidden = self.vlmixer(**sub_batch_inputs(tag_batch)).last_hidden_state
            losses["tag_mlm_loss"] = self.token_prediction_loss(hidden, tag_batch["labels"])
        if pair_batch is not None:
            losses.update(self._pair_stream_losses(pair_batch))
        if not losses:
            raise ValueError("The batch carries no stream with targets: pass labels, original_input_ids, tag_batch or pair_batch.")
        total = sum(getattr(self.config, f"{name}_weight") * value for name, value in losses.items())
        return VLMixerForPreTrainingOutput(
            loss=total, logit_scale=self.contrastive.logit_scale.detach(), **losses, **embeds
        )


__all__ = ["VLMixerPreTrainedModel", "VLMixerModel", "VLMixerForMaskedLM", "VLMixerForPreTraining", "VLMixerForPreTrainingOutput", "AUTO_MAP"]
