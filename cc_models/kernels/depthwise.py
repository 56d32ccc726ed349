"""Depthwise CondConv as one Triton kernel: each program mixes its sample's kernel taps from the experts.

No per-sample weight tensor and no batch-grouped convolution: a program owns one
sample, a tile of output positions and a tile of channels; for every tap it mixes
``sum_e routing[b, e] * experts[e, c, tap]`` in registers and accumulates in fp32.
Padding is TF "SAME" (asymmetric, from the input size) or any static amount: the
caller passes the top/left pads and the output size, out-of-range taps read zero.
The epilogue adds the bias (routed expert bias and/or the folded BatchNorm shift)
and optionally SiLU. Any strides: channels_last (NHWC) reads whole channel rows.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import ACTIVATIONS, empty_like_layout, next_pow2


@triton.jit
def _depthwise_kernel(
    x_ptr, routing_ptr, experts_ptr, expert_bias_ptr, static_bias_ptr, out_ptr,
    C, H, W, OH, OW, pad_top, pad_left,
    sxb, sxc, sxh, sxw, sob, soc, soh, sow, srb, sre,
    E: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    HAS_EXPERT_BIAS: tl.constexpr, HAS_STATIC_BIAS: tl.constexpr, ACT: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    tiles = (OH * OW + BLOCK_P - 1) // BLOCK_P  # not tl.cdiv: see launch.py
    pid = tl.program_id(0)
    b = (pid // tiles).to(tl.int64)  # int64: batch x channels x pixels can pass 2**31
    p = (pid % tiles) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    p_ok = p < OH * OW
    c_ok = c < C
    oh = p // OW
    ow = p % OW
    ih0 = oh * SH - pad_top
    iw0 = ow * SW - pad_left
    x_sample = x_ptr + b * sxb + c[None, :] * sxc
    acc = tl.full((BLOCK_P, BLOCK_C), 0.0, tl.float32)
    for kh in tl.static_range(KH):
        ih = ih0 + kh
        row_ok = p_ok & (ih >= 0) & (ih < H)
        for kw in tl.static_range(KW):
            iw = iw0 + kw
            ok = row_ok & (iw >= 0) & (iw < W)
            tap = tl.full((BLOCK_C,), 0.0, tl.float32)
            for e in tl.static_range(E):
                r = tl.load(routing_ptr + b * srb + e * sre).to(tl.float32)
                w = tl.load(experts_ptr + e * C * KH * KW + c * (KH * KW) + kh * KW + kw, mask=c_ok, other=0.0)
                tap += r * w.to(tl.float32)
            xv = tl.load(x_sample + ih[:, None] * sxh + iw[:, None] * sxw, mask=ok[:, None] & c_ok[None, :],
                         other=0.0)
            acc += xv.to(tl.float32) * tap[None, :]
    if HAS_EXPERT_BIAS:
        bias = tl.full((BLOCK_C,), 0.0, tl.float32)
        for e in tl.static_range(E):
            r = tl.load(routing_ptr + b * srb + e * sre).to(tl.float32)
            bias += r * tl.load(expert_bias_ptr + e * C + c, mask=c_ok, other=0.0).to(tl.float32)
        acc += bias[None, :]
    if HAS_STATIC_BIAS:
        acc += tl.load(static_bias_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    if ACT == 1:  # SiLU
        acc = acc / (1.0 + tl.exp(-acc))
    out = out_ptr + b * sob + c[None, :] * soc + oh[:, None] * soh + ow[:, None] * sow
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=p_ok[:, None] & c_ok[None, :])


def depthwise_cond_conv(x: torch.Tensor, routing: torch.Tensor, experts: torch.Tensor,
                        kernel_size: tuple[int, int], stride: tuple[int, int], pads: tuple[int, int, int, int],
                        expert_bias: torch.Tensor | None = None, static_bias: torch.Tensor | None = None,
                        act: str | None = None) -> torch.Tensor:
    """``x`` [B, C, H, W] (any strides) convolved per sample with ``routing[b] @ experts`` reshaped [C, 1, kh, kw].

    ``experts`` [E, C*kh*kw] (timm's layout), ``pads`` = (left, right, top, bottom) as ``F.pad`` takes them.
    The output has ``x``'s dtype and memory format.
    """
    b, c, h, w = x.shape
    kh, kw = kernel_size
    sh, sw = stride
    left, right, top, bottom = pads
    oh, ow = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
    out = empty_like_layout(x, (b, c, oh, ow))
    experts = experts.contiguous()
    block_p = min(64, max(16, next_pow2(oh * ow)))
    block_c = min(64, max(16, next_pow2(c)))
    grid = (b * triton.cdiv(oh * ow, block_p), triton.cdiv(c, block_c))
    dummy = experts  # an unused pointer argument still needs a tensor
    _depthwise_kernel[grid](
        x, routing, experts,
        expert_bias.contiguous() if expert_bias is not None else dummy,
        static_bias.contiguous() if static_bias is not None else dummy, out,
        c, h, w, oh, ow, top, left,
        *x.stride(), *out.stride(), *routing.stride(),
        E=experts.shape[0], KH=kh, KW=kw, SH=sh, SW=sw,
        HAS_EXPERT_BIAS=expert_bias is not None, HAS_STATIC_BIAS=static_bias is not None, ACT=ACTIVATIONS[act],
        BLOCK_P=block_p, BLOCK_C=block_c, num_warps=4,
    )
    return out
