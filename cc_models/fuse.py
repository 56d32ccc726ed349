"""Fold BatchNorm into the convolution before it, for inference.

In eval mode BatchNorm is an affine map per channel, ``y = s * x + t`` with
``s = gamma / sqrt(var + eps)`` and ``t = beta - mean * s``; after a
convolution it folds into the kernel (scaled by ``s`` per output channel) and a
bias ``t``. That removes a full pass over every activation map, about 15% of
the CPU time of these models.

CondConv is linear in its experts, so scaling every expert's kernel by ``s``
scales the routed mix by ``s`` too. The shift cannot be an expert bias (the
sigmoid routing weights do not sum to one), so it becomes the layer's
``static_bias``.

Folding changes parameters and state-dict keys, so it is done on request, in
place, on a model in eval mode: the saved format stays timm's (a fused model
refuses ``state_dict()``; save the unfused one).

After folding, ``fold_activations_`` moves each SiLU that follows a convolution
into that convolution (its ``epilogue_act``) and switches the convolutions to
their inference form: on CPU oneDNN with packed weights and the SiLU as a
post-op (``cc_models.onednn``) and TF "SAME" padding grown into the kernel
(``padding.padding_in_kernel``), on CUDA the Triton kernels' epilogue for CondConv.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import BatchNormAct2d, CondConv2d, Conv2d


def _affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


@torch.no_grad()
def fold_batchnorm_(conv: nn.Module, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` into ``conv`` (an ``nn.Conv2d`` or ``CondConv2d``) in place."""
    if bn.training or not bn.track_running_stats or bn.running_var is None:
        raise ValueError("BatchNorm folding needs eval-mode BatchNorm with running statistics")
    scale, shift = _affine(bn)
    if getattr(conv, "experts_in_out", False):
        raise ValueError("fold BatchNorm before fold_activations_ (its experts are no longer in timm's layout)")
    if isinstance(conv, CondConv2d):
        experts = conv.weight.view(conv.num_experts, conv.out_channels, -1)
        experts.mul_(scale.view(1, -1, 1))
        if conv.bias is not None:
            conv.bias.mul_(scale)
        conv.static_bias = shift if conv.static_bias is None else conv.static_bias * scale + shift
    elif isinstance(conv, nn.Conv2d):
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        if conv.bias is None:
            conv.bias = nn.Parameter(shift)
        else:
            conv.bias.copy_(conv.bias * scale + shift)
    else:
        raise TypeError(f"cannot fold BatchNorm into {type(conv).__name__}")


def fuse_batchnorm_(model: nn.Module) -> nn.Module:
    """Fold every (conv, BatchNorm) pair a module declares in ``fuse_pairs``; BatchNorm becomes its activation."""
    if model.training:
        raise RuntimeError("fuse() is for inference: call model.eval() first")
    for module in list(model.modules()):
        for conv_name, bn_name in getattr(module, "fuse_pairs", ()):
            bn = getattr(module, bn_name)
            if not isinstance(bn, nn.BatchNorm2d):
                continue  # already folded
            fold_batchnorm_(getattr(module, conv_name), bn)
            setattr(module, bn_name, bn.act if isinstance(bn, BatchNormAct2d) else nn.Identity())
    return model


def fold_activations_(model: nn.Module) -> nn.Module:
    """Put every convolution of a fused model in its inference form, in place; returns ``model``.

    A SiLU right after a convolution (what BatchNorm folding leaves of BatchNormAct2d) moves into it as
    its ``epilogue_act``; the SiLU module becomes an Identity. Outputs stay equal within float rounding.
    """
    for module in list(model.modules()):
        for conv_name, after_name in getattr(module, "fuse_pairs", ()):
            conv, after = getattr(module, conv_name), getattr(module, after_name)
            if isinstance(conv, (Conv2d, CondConv2d)) and conv.epilogue_act is None and isinstance(after, nn.SiLU):
                conv.epilogue_act = "silu"
                setattr(module, after_name, nn.Identity())
    for module in model.modules():
        if isinstance(getattr(module, "inference", None), bool):  # the layers and blocks with an inference form
            module.inference = True
        if isinstance(module, CondConv2d) and module.pointwise and not module.experts_in_out:
            _experts_in_out_(module)
    return model


@torch.no_grad()
def _experts_in_out_(conv: CondConv2d) -> None:
    """Store a pointwise CondConv's experts as [Cin, Cout] each, so the per-sample kernel the routing mixes is
    the right operand of ``x[HW, Cin] @ W`` as it is (``CondConv2d._forward_bmm``; the CUDA kernel reads
    either layout)."""
    e = conv.num_experts
    conv.weight.copy_(conv.weight.view(e, conv.out_channels, conv.in_channels).transpose(1, 2).reshape(e, -1))
    conv.experts_in_out = True
