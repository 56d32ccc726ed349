"""Triton kernels for CondConv on CUDA: the expert mix happens inside the convolution.

``CondConv2d.forward`` calls :func:`cuda_forward` for CUDA inputs. It returns None
(the layer then runs its own PyTorch form) where the kernels do not apply: triton
missing, autograd needed, a layer shape they do not cover (dilation, grouped but
not depthwise, strided or padded 1x1), float64, or an empty batch. Nothing here is imported on a
CPU-only path, so an install without triton behaves exactly as before.

The layer's PyTorch form on CUDA runs its batch-grouped convolution with cuDNN's
autotuner off (:func:`cudnn_without_benchmark`): with ``groups = batch x channels``
(up to 294,912) the autotuner's search does not finish in minutes.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import torch

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@functools.lru_cache(maxsize=1)
def _kernels():
    """``(depthwise, pointwise)`` launchers, or None without a working triton."""
    try:
        from .depthwise import depthwise_cond_conv
        from .pointwise import pointwise_cond_conv
    except Exception:  # ImportError, or a triton that cannot initialise on this machine
        return None
    return depthwise_cond_conv, pointwise_cond_conv


def available() -> bool:
    """True when the Triton kernels can be used (triton imports)."""
    return _kernels() is not None


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a convolution of ``x`` runs in: autocast's lower precision when autocast is on, as F.conv2d."""
    if x.is_cuda and torch.is_autocast_enabled("cuda"):
        return torch.get_autocast_dtype("cuda")
    return x.dtype


def cuda_forward(layer: torch.nn.Module, x: torch.Tensor, routing: torch.Tensor) -> torch.Tensor | None:
    """The output of ``layer`` (a ``cc_models.layers.CondConv2d``, which calls this: no import back, no cycle)
    through the Triton kernels, or None where they do not apply."""
    kernels = _kernels()
    if kernels is None or torch.jit.is_tracing():
        return None
    if torch.is_grad_enabled() and (x.requires_grad or layer.weight.requires_grad or routing.requires_grad):
        return None  # the kernels have no backward: training keeps the differentiable form
    dtype = compute_dtype(x)
    if dtype not in DTYPES or layer.dilation != (1, 1) or x.dim() != 4 or x.numel() == 0:
        return None
    depthwise, pointwise = kernels
    act = getattr(layer, "epilogue_act", None)
    x = x.to(dtype)
    if layer.pointwise:
        return pointwise(x, routing, layer.weight, layer.bias, layer.static_bias, act,
                         experts_in_out=layer.experts_in_out)
    if layer.groups == layer.in_channels == layer.out_channels:
        if layer.dynamic_padding:
            from ..layers.padding import same_pad_amounts

            pads = same_pad_amounts(x.shape[-2], x.shape[-1], *layer.kernel_size, *layer.stride, 1, 1)
        else:
            (ph, pw) = layer.padding
            pads = (pw, pw, ph, ph)
        return depthwise(x, routing, layer.weight, layer.kernel_size, layer.stride, pads, layer.bias,
                         layer.static_bias, act)
    return None


@contextlib.contextmanager
def cudnn_without_benchmark() -> Iterator[None]:
    """cuDNN's autotuner (``cudnn.benchmark``) off for the block, every other setting as the user left it.

    (``torch.backends.cudnn.flags`` would reset the settings it is not given, and its signature moves
    between torch releases.)
    """
    cudnn = torch.backends.cudnn
    before = cudnn.benchmark
    cudnn.benchmark = False
    try:
        yield
    finally:
        cudnn.benchmark = before
