"""What both kernels' launchers share (no triton import here).

The kernels call only triton.language builtins (``tl.load``, ``tl.dot``, ``tl.full``, ``tl.exp``...), none of the
``@triton.jit`` helpers of ``triton.language.standard`` (``tl.cdiv``, ``tl.zeros``, ``tl.sigmoid``): those are
decorated when triton is first imported, so a test that loads the kernels under
``TRITON_INTERPRET=1`` after triton was imported could not call them.
"""
from __future__ import annotations

import torch

ACTIVATIONS = {None: 0, "silu": 1}  # the epilogue activations the kernels know, by the code they take


def next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def empty_like_layout(x: torch.Tensor, shape: tuple[int, int, int, int]) -> torch.Tensor:
    """An output of ``shape`` in ``x``'s dtype and layout: channels_last stays channels_last."""
    channels_last = x.stride(1) == 1 and x.shape[1] > 1
    return torch.empty(shape, device=x.device, dtype=x.dtype,
                       memory_format=torch.channels_last if channels_last else torch.contiguous_format)
