"""Padding rules: PyTorch-style symmetric, and TensorFlow "SAME".

TF "SAME" pads so that ``out = ceil(in / stride)``, putting the odd pixel on the
bottom/right. For stride 1 and an odd kernel that is an ordinary symmetric pad;
otherwise it depends on the input size, so it is computed per input size and
cached (a model sees a handful of sizes, and this runs in every strided conv).
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

PadAmounts = tuple[int, int, int, int]  # F.pad order: left, right, top, bottom


def get_padding(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """Symmetric padding PyTorch-style models use ("same"-ish for odd kernels)."""
    return ((stride - 1) + dilation * (kernel_size - 1)) // 2


def is_static_pad(kernel_size: int, stride: int = 1, dilation: int = 1) -> bool:
    """True when TF "SAME" does not depend on the input size (and is symmetric)."""
    return stride == 1 and (dilation * (kernel_size - 1)) % 2 == 0


def get_same_padding(size: int, kernel_size: int, stride: int, dilation: int) -> int:
    """Total TF "SAME" padding along one dimension."""
    out = (size + stride - 1) // stride  # ceil without float rounding
    return max((out - 1) * stride + (kernel_size - 1) * dilation + 1 - size, 0)


def _same_pad_amounts(ih: int, iw: int, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int) -> PadAmounts:
    pad_h = get_same_padding(ih, kh, sh, dh)
    pad_w = get_same_padding(iw, kw, sw, dw)
    return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2


same_pad_amounts = lru_cache(maxsize=1024)(_same_pad_amounts)


def _traced_pad_same(x: torch.Tensor, kernel_size: tuple[int, int], stride: tuple[int, int],
                     dilation: tuple[int, int]) -> torch.Tensor:
    # Under torch.jit.trace sizes are tensors: record the arithmetic so the trace stays valid at other sizes.
    ih, iw = x.shape[-2:]
    pads = []
    for size, k, s, d in ((iw, kernel_size[1], stride[1], dilation[1]), (ih, kernel_size[0], stride[0], dilation[0])):
        total = torch.clamp(((size / s).ceil() - 1) * s + (k - 1) * d + 1 - size, min=0).to(torch.long)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def resolve_padding(padding: str | int, kernel_size: int, stride: int = 1, dilation: int = 1) -> tuple[int, bool]:
    """``(static padding, dynamic)``: dynamic means TF "SAME" computed per input size.

    ``padding`` is ``"same"`` (TensorFlow), ``"symmetric"`` (PyTorch style), ``"valid"`` or an int.
    """
    if isinstance(padding, int):
        return padding, False
    mode = padding.lower()
    if mode == "same":
        if is_static_pad(kernel_size, stride, dilation):
            return get_padding(kernel_size, stride, dilation), False
        return 0, True
    if mode == "valid":
        return 0, False
    if mode in ("symmetric", ""):
        return get_padding(kernel_size, stride, dilation), False
    raise ValueError(f"unknown padding {padding!r}; expected 'same', 'symmetric', 'valid' or an int")


def padding_in_kernel(pads: PadAmounts, dilation: tuple[int, int]) -> tuple[PadAmounts, tuple[int, int]] | None:
    """TF "SAME" ``pads`` as a symmetric conv padding over a kernel grown by leading zeros, or None.

    TF's usual asymmetric case puts one pixel more on the bottom/right (``right == left + 1``, e.g.
    ``(0, 1)`` for 3x3 stride 2 on an even size). A kernel with one zero tap prepended, padded
    symmetrically by ``right``, computes exactly the same outputs (the zero tap only ever meets the extra
    left pixel) without copying the input into a padded buffer: on CPU that copy costs more than the
    convolution (3x on B0's first stride-2 depthwise at batch 32). Returns ``(kernel pad in F.pad order,
    conv padding (h, w))``; None where this does not apply (dilation, or pads off by more than one).
    """
    left, right, top, bottom = pads
    if dilation != (1, 1) or right - left not in (0, 1) or bottom - top not in (0, 1):
        return None
    return (right - left, 0, bottom - top, 0), (bottom, right)


def same_conv_operands(x: torch.Tensor, weight: torch.Tensor, kernel_size: tuple[int, int],
                       stride: tuple[int, int], dilation: tuple[int, int],
                       pad_in_kernel: bool = False) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """``(input, weight, symmetric padding)`` whose plain convolution is the TF "SAME" convolution of ``x``.

    ``pad_in_kernel``: the inference form's way (:func:`padding_in_kernel`), the same outputs without the
    padded copy of ``x``. Off by default: FLOP counters would count the zero taps.
    """
    if torch.jit.is_tracing():
        return _traced_pad_same(x, kernel_size, stride, dilation), weight, (0, 0)
    pads = same_padding_for(x, kernel_size, stride, dilation)
    left, right, top, bottom = pads
    if left == right and top == bottom:  # e.g. odd input sizes at stride 2: let the conv pad, no copy
        return x, weight, (top, left)
    in_kernel = padding_in_kernel(pads, dilation) if pad_in_kernel else None
    if in_kernel is not None:
        kernel_pad, padding = in_kernel
        return x, F.pad(weight, kernel_pad), padding
    return F.pad(x, pads), weight, (0, 0)


def conv2d_same(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    pad_in_kernel: bool = False,
) -> torch.Tensor:
    """``F.conv2d`` with TF "SAME" padding for the input's size (``pad_in_kernel``: see :func:`same_conv_operands`)."""
    x, weight, padding = same_conv_operands(x, weight, kernel_size, stride, dilation, pad_in_kernel)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def same_padding_for(x: torch.Tensor, kernel_size: tuple[int, int], stride: tuple[int, int],
                     dilation: tuple[int, int]) -> PadAmounts:
    """TF "SAME" pad amounts (F.pad order) for ``x``'s height and width."""
    ih, iw = x.shape[-2:]
    args = (ih, iw, kernel_size[0], kernel_size[1], stride[0], stride[1], dilation[0], dilation[1])
    # torch.compile folds the arithmetic into the graph; the cache would only make Dynamo warn.
    return _same_pad_amounts(*args) if torch.compiler.is_compiling() else same_pad_amounts(*args)
