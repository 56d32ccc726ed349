"""Plain convolutions with the model's padding rule."""
from __future__ import annotations

import torch
import torch.nn as nn

from .padding import conv2d_same, resolve_padding


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TF "SAME" padding that depends on the input size (strided or even kernels)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, 0, dilation, groups, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d_same(x, self.weight, self.bias, self.kernel_size, self.stride, self.dilation, self.groups)


def create_conv2d(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                  groups: int = 1, padding: str | int = "same", bias: bool = False) -> nn.Conv2d:
    """A ``Conv2dSame`` only when "SAME" padding is input-dependent; a plain, statically padded ``nn.Conv2d`` otherwise."""
    static_pad, dynamic = resolve_padding(padding, kernel_size, stride, dilation)
    if dynamic:
        return Conv2dSame(in_channels, out_channels, kernel_size, stride, dilation, groups, bias)
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, static_pad, dilation, groups, bias)
