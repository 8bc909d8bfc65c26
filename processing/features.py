"""Region features from a frozen vision backbone, batched: what galleries and image-side evaluation are made of."""

import numpy as np
import torch

from vlmixer.modeling_vlmixer.efficientnet_lite import EFFICIENTNET_LITE0_FEATURE_DIM, efficientnet_lite0_pretrained

from .processing_vlmixer import crop_region, efficientnet_image_processor, to_rgb_image


class RegionFeatureExtractor:
    """
    Turns images and boxes into (N, D) float32 features with a frozen backbone: the built-in `"efficientnet-lite0"`
    (real ImageNet weights), or `"auto:<name or path>"` for any vision model `transformers.AutoModel` loads.
    `backbone_id` is what galleries record and what `VLMixerConfig.backbone_id` must equal.
    """

    def __init__(self, backbone: str = "efficientnet-lite0", image_size: int = 224, batch_size: int = 64):
        self.batch_size = batch_size
        if backbone == "efficientnet-lite0":
            self.model = efficientnet_lite0_pretrained()
            self.image_processor = efficientnet_image_processor(image_size)
            self.feature_dim = EFFICIENTNET_LITE0_FEATURE_DIM
        elif backbone.startswith("auto:"):
            from transformers import AutoImageProcessor, AutoModel

            name = backbone.removeprefix("auto:")
            self.model = AutoModel.from_pretrained(name).eval().requires_grad_(False)
            self.image_processor = AutoImageProcessor.from_pretrained(name)
            config = self.model.config
            self.feature_dim = getattr(config, "hidden_size", None) or config.hidden_sizes[-1]
        else:
            raise ValueError(f"Unknown backbone {backbone!r}: use 'efficientnet-lite0' or 'auto:<model name or path>'.")
        self.backbone_id = backbone
        self.image_size = image_size

    @property
    def preprocessing(self) -> dict:
        """How crops become backbone inputs, as galleries record it: the built-in backbone's crop size (with the
        resizing and normalisation that size implies), or the `auto:` model's own image processor."""
        if self.backbone_id != "efficientnet-lite0":
            return {"image_processor": self.backbone_id.removeprefix("auto:")}
        processor = self.image_processor
        return {
            "image_size": self.image_size,
            "resize_shortest_edge": processor.size["shortest_edge"],
            "resample": "bicubic",
            "crop": "center",
            "image_mean": list(processor.image_mean),
            "image_std": list(processor.image_std),
        }

    @classmethod
    def like(cls, backbone: str, preprocessing: dict | None, batch_size: int = 64) -> "RegionFeatureExtractor":
        """An extractor that makes features as the recorded `preprocessing` of a gallery or checkpoint says (every
        recorded field; an older record may hold the crop size alone)."""
        image_size = (preprocessing or {}).get("image_size", 224)
        extractor = cls(backbone, image_size, batch_size)
        made = extractor.preprocessing
        if any(made.get(key) != value for key, value in (preprocessing or {}).items()):
            raise ValueError(f"Cannot repeat the recorded preprocessing {preprocessing}: this code makes {extractor.preprocessing}.")
        return extractor

    @torch.no_grad()
    def encode_crops(self, crops: list) -> np.ndarray:
        """RGB crops (PIL images or arrays) -> (N, D) float32 features, `batch_size` at a time."""
        from vlmixer.modeling_vlmixer.modeling_vlmixer import pooled_backbone_features

        outputs = []
        for start in range(0, len(crops), self.batch_size):
            batch = [to_rgb_image(crop) for crop in crops[start : start + self.batch_size]]
            pixels = torch.from_numpy(np.asarray(self.image_processor(images=batch, return_tensors="np")["pixel_values"]))
            outputs.append(pooled_backbone_features(self.model, pixels).float().numpy())
        return np.concatenate(outputs) if outputs else np.zeros((0, self.feature_dim), dtype=np.float32)

    def encode_regions(self, image, boxes) -> np.ndarray:
        """One image and its (R, 4) normalised boxes -> (R, D) features."""
        rgb = to_rgb_image(image)
        return self.encode_crops([crop_region(rgb, box) for box in boxes])


__all__ = ["RegionFeatureExtractor"]
