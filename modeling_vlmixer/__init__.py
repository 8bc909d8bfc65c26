"""VLMixer models. Importing this package registers them with the transformers Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForPreTraining

from .configuration_vlmixer import PRESETS, VLMixerConfig
from .modeling_vlmixer import (
    VLMixerForMaskedLM,
    VLMixerForPreTraining,
    VLMixerForPreTrainingOutput,
    VLMixerModel,
    VLMixerPreTrainedModel,
)


AutoConfig.register(VLMixerConfig.model_type, VLMixerConfig, exist_ok=True)
AutoModel.register(VLMixerConfig, VLMixerModel, exist_ok=True)
AutoModelForMaskedLM.register(VLMixerConfig, VLMixerForMaskedLM, exist_ok=True)
AutoModelForPreTraining.register(VLMixerConfig, VLMixerForPreTraining, exist_ok=True)

__all__ = [
    "PRESETS",
    "VLMixerConfig",
    "VLMixerForMaskedLM",
    "VLMixerForPreTraining",
    "VLMixerForPreTrainingOutput",
    "VLMixerModel",
    "VLMixerPreTrainedModel",
]
