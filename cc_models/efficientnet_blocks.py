"""EfficientNet blocks: depthwise-separable, inverted residual, and its CondConv form.

Attribute names (``conv_pw``, ``bn1``, ``conv_dw``, ``se``, ``conv_pwl``,
``routing_fn``...) are the state-dict keys of timm checkpoints; do not rename.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import cpu_kernels
from .layers import BatchNormAct2d, CondConv2d, DropPath, SqueezeExcite, create_conv2d, make_divisible

NormLayer = Callable[..., BatchNormAct2d]  # (channels, apply_act=True) -> BatchNormAct2d


def _se(channels: int, rd_channels: int, act_layer: str) -> nn.Module:
    return SqueezeExcite(channels, rd_channels, act_layer) if rd_channels > 0 else nn.Identity()


def _drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0 else nn.Identity()


class DepthwiseSeparableConv(nn.Module):
    """dw k x k -> BN+act -> SE -> pw 1x1 -> BN, with a skip when shapes allow."""

    fuse_pairs = (("conv_dw", "bn1"), ("conv_pw", "bn2"))  # (conv, the BatchNorm right after it): see fuse.py

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, *, se_ratio: float,
                 act_layer: str, norm_layer: NormLayer, padding: str, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.has_skip = stride == 1 and in_chs == out_chs
        self.conv_dw = create_conv2d(in_chs, in_chs, kernel_size, stride, groups=in_chs, padding=padding)
        self.bn1 = norm_layer(in_chs)
        self.se = _se(in_chs, round(in_chs * se_ratio), act_layer)
        self.conv_pw = create_conv2d(in_chs, out_chs, 1, padding=padding)
        self.bn2 = norm_layer(out_chs, apply_act=False)
        self.drop_path = _drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.bn1(self.conv_dw(x))
        x = self.se(x)
        x = self.bn2(self.conv_pw(x))
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


class InvertedResidual(nn.Module):
    """pw 1x1 expand -> BN+act -> dw k x k -> BN+act -> SE -> pw 1x1 project -> BN (MBConv)."""

    fuse_pairs = (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3"))

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, *, exp_ratio: float,
                 se_ratio: float, act_layer: str, norm_layer: NormLayer, padding: str,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        mid_chs = make_divisible(in_chs * exp_ratio)
        self.has_skip = stride == 1 and in_chs == out_chs
        # Registration order = timm's state-dict order.
        self.conv_pw = self._conv(in_chs, mid_chs, 1, 1, 1, padding)
        self.bn1 = norm_layer(mid_chs)
        self.conv_dw = self._conv(mid_chs, mid_chs, kernel_size, stride, mid_chs, padding)
        self.bn2 = norm_layer(mid_chs)
        # The SE ratio is relative to the block's input channels, applied to the expanded ones (TF reference).
        self.se = _se(mid_chs, round(mid_chs * (se_ratio / exp_ratio)) if se_ratio else 0, act_layer)
        self.conv_pwl = self._conv(mid_chs, out_chs, 1, 1, 1, padding)
        self.bn3 = norm_layer(out_chs, apply_act=False)
        self.drop_path = _drop_path(drop_path_rate)

    def _conv(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, groups: int, padding: str) -> nn.Module:
        return create_conv2d(in_chs, out_chs, kernel_size, stride, groups=groups, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.bn1(self.conv_pw(x))
        x = self.bn2(self.conv_dw(x))
        x = self.se(x)
        x = self.bn3(self.conv_pwl(x))
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


class CondConvResidual(InvertedResidual):
    """Inverted residual whose three convolutions are CondConvs sharing one routing per sample."""

    inference = False  # class default too: a model pickled before this attribute existed still runs

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, *, num_experts: int,
                 **kwargs) -> None:
        self.num_experts = num_experts  # read by _conv during super().__init__
        super().__init__(in_chs, out_chs, kernel_size, stride, **kwargs)
        self.routing_fn = nn.Linear(in_chs, num_experts)
        self.inference = False  # set by cc_models.fuse.fold_activations_

    def routing(self, x: torch.Tensor) -> torch.Tensor:
        """Each sample's expert weights [B, E], shared by the block's three CondConvs."""
        if self.inference and not torch.jit.is_tracing():
            # The fused model: one C++ pass on CPU, else the mean's division rides in the matrix product (as in
            # SqueezeExcite).
            fn = self.routing_fn
            out = cpu_kernels.block_routing(x, fn.weight, fn.bias)
            if out is not None:
                return out
            return torch.addmm(fn.bias, x.sum((2, 3)), fn.weight.t(), alpha=1.0 / (x.shape[-2] * x.shape[-1])).sigmoid_()
        # adaptive_avg_pool2d (not mean) as in timm: FLOP counters then count the routing pool identically.
        return torch.sigmoid(self.routing_fn(F.adaptive_avg_pool2d(x, 1).flatten(1)))

    def _conv(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, groups: int, padding: str) -> nn.Module:
        return CondConv2d(in_chs, out_chs, kernel_size, stride, padding=padding, groups=groups,
                          num_experts=self.num_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        routing = self.routing(x)
        x = self.bn1(self.conv_pw(x, routing))
        x = self.bn2(self.conv_dw(x, routing))
        if (self.inference and not torch.jit.is_tracing() and isinstance(self.se, SqueezeExcite)
                and isinstance(self.conv_pwl, CondConv2d)):
            # The SE gate scales the projection's input channels: the projection folds it into each sample's
            # kernel where its CPU kernel runs (instead of a pass over the activations), else multiplies it in.
            x = self.bn3(self.conv_pwl(x, routing, self.se.inference_gate(x)))
        else:
            x = self.se(x)
            x = self.bn3(self.conv_pwl(x, routing))
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x
