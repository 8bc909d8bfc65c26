"""VLMixer models. Importing this package registers them with the transformers Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from .configuration_vlmixer import PRESETS, VLMixerConfig
from .modeling_vlmixer import VLMixerForMaskedLM, VLMixerModel, VLMixerPreTrainedModel


AutoConfig.register(VLMixerConfig.model_type, VLMixerConfig, exist_ok=True)
AutoModel.register(VLMixerConfig, VLMixerModel, exist_ok=True)
AutoModelForMaskedLM.register(VLMixerConfig, VLMixerForMaskedLM, exist_ok=True)

__all__ = ["PRESETS", "VLMixerConfig", "VLMixerForMaskedLM", "VLMixerModel", "VLMixerPreTrainedModel"]
