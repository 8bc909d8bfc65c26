"""VLMixer models. Importing this package registers them with the transformers Auto classes."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    AutoModelForVisualQuestionAnswering,
)

from .configuration_vlmixer import PRESETS, VLMixerConfig
from .modeling_vlmixer import (
    VLMixerForCaptioning,
    VLMixerForImageTextRetrieval,
    VLMixerForMaskedLM,
    VLMixerForPreTraining,
    VLMixerForPreTrainingOutput,
    VLMixerForQuestionAnswering,
    VLMixerForSequenceClassification,
    VLMixerForVisualReasoning,
    VLMixerImageTextRetrievalOutput,
    VLMixerModel,
    VLMixerPreTrainedModel,
)


AutoConfig.register(VLMixerConfig.model_type, VLMixerConfig, exist_ok=True)
AutoModel.register(VLMixerConfig, VLMixerModel, exist_ok=True)
AutoModelForMaskedLM.register(VLMixerConfig, VLMixerForMaskedLM, exist_ok=True)
AutoModelForPreTraining.register(VLMixerConfig, VLMixerForPreTraining, exist_ok=True)
AutoModelForVisualQuestionAnswering.register(VLMixerConfig, VLMixerForQuestionAnswering, exist_ok=True)
AutoModelForSequenceClassification.register(VLMixerConfig, VLMixerForSequenceClassification, exist_ok=True)
AutoModelForImageTextToText.register(VLMixerConfig, VLMixerForCaptioning, exist_ok=True)
# Retrieval and visual reasoning have no Auto class in transformers: import VLMixerForImageTextRetrieval and
# VLMixerForVisualReasoning directly.

__all__ = [
    "PRESETS",
    "VLMixerConfig",
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
