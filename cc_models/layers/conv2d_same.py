"""Plain convolutions with the model's padding rule, and their inference form.

``Conv2d`` is ``nn.Conv2d`` (same parameters, same state-dict keys) with two
settings only ``model.fuse()`` turns on (:func:`cc_models.fuse.fold_activations_`):

* ``epilogue_act``: the activation after the conv, applied by the conv. On CPU
  (float32, channels_last) the conv then runs in oneDNN with packed weights and
  the SiLU as a post-op (``cc_models.onednn``); elsewhere it is ``F.conv2d`` and
  an in-place SiLU on the fresh output;
* ``inference``: on CPU, TF "SAME" padding grown into the kernel instead of copying
  the input into a padded buffer (``padding.padding_in_kernel``).

The unfused model runs exactly ``nn.Conv2d``, so FLOP counters and exporters see
the ops timm's model has.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import onednn
from .padding import conv2d_same, padding_in_kernel, resolve_padding, same_padding_for

NO_KERNEL_PAD = (0, 0, 0, 0)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` with the fused model's inference form (see the module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.epilogue_act: str | None = None  # "silu" once fold_activations_ moved the SiLU after it in here
        self.inference = False  # set by fold_activations_: the fused model's execution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.inference:
            return self._conv(x)
        if onednn.applies(x, self.weight):
            padding, kernel_pad = self._onednn_padding(x)
            if padding is not None:
                return onednn.conv2d(self, x, padding, kernel_pad, self.epilogue_act)
        out = self._conv(x)
        return out if self.epilogue_act is None else F.silu(out, inplace=True)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)

    def _onednn_padding(self, x: torch.Tensor) -> tuple[tuple[int, int] | None, tuple[int, int, int, int]]:
        """(symmetric conv padding, kernel pad) for oneDNN; padding None where only F.conv2d applies."""
        if isinstance(self.padding, str):  # padding="same"/"valid" strings: leave them to F.conv2d
            return None, NO_KERNEL_PAD
        return tuple(self.padding), NO_KERNEL_PAD


class Conv2dSame(Conv2d):
    """``nn.Conv2d`` with TF "SAME" padding that depends on the input size (strided or even kernels)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, 0, dilation, groups, bias)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        # Grown kernels only where measured (CPU): cuDNN may have no fast path for 4x4/6x6 depthwise kernels.
        return conv2d_same(x, self.weight, self.bias, self.kernel_size, self.stride, self.dilation, self.groups,
                           pad_in_kernel=self.inference and x.device.type == "cpu")

    def _onednn_padding(self, x: torch.Tensor) -> tuple[tuple[int, int] | None, tuple[int, int, int, int]]:
        pads = same_padding_for(x, self.kernel_size, self.stride, self.dilation)
        in_kernel = padding_in_kernel(pads, self.dilation)
        if in_kernel is None:
            return None, NO_KERNEL_PAD
        kernel_pad, padding = in_kernel
        return padding, kernel_pad


def create_conv2d(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                  groups: int = 1, padding: str | int = "same", bias: bool = False) -> nn.Conv2d:
    """A ``Conv2dSame`` only when "SAME" padding is input-dependent; a statically padded ``Conv2d`` otherwise."""
    static_pad, dynamic = resolve_padding(padding, kernel_size, stride, dilation)
    if dynamic:
        return Conv2dSame(in_channels, out_channels, kernel_size, stride, dilation, groups, bias)
    return Conv2d(in_channels, out_channels, kernel_size, stride, static_pad, dilation, groups, bias)
