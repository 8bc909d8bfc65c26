"""VLMixer processing: cross-modal CutMix (`VLMixerProcessor`), concept vocabularies, patch galleries, collators.

Importing it registers `VLMixerProcessor` with `AutoProcessor` for VLMixer checkpoints.
"""

from transformers import AutoProcessor

from vlmixer.modeling_vlmixer import VLMixerConfig

from .collators import DataCollatorForCMC, DataCollatorForPairs, DataCollatorForTags, mask_tokens
from .concepts import ConceptMatch, ConceptVocabulary, normalise_form
from .gallery import GalleryError, PatchGallery, PatchGalleryBuilder
from .processing_vlmixer import VLMixerProcessor


AutoProcessor.register(VLMixerConfig, VLMixerProcessor, exist_ok=True)

__all__ = [
    "ConceptMatch",
    "ConceptVocabulary",
    "DataCollatorForCMC",
    "DataCollatorForPairs",
    "DataCollatorForTags",
    "GalleryError",
    "PatchGallery",
    "PatchGalleryBuilder",
    "VLMixerProcessor",
    "mask_tokens",
    "normalise_form",
]
