"""Pointwise (1x1) CondConv as one Triton kernel: a per-sample GEMM with the expert mix in the K loop.

``out_b[HW, Cout] = x_b[HW, Cin] @ (sum_e routing[b, e] * W_e)^T``: a program owns one
sample, a tile of pixels (M) and a tile of output channels (N); at every K step it
mixes that [K, N] slice of the sample's kernel from the experts in fp32, casts it
to the input's dtype for the tensor-core dot, and accumulates in fp32. The
epilogue adds the bias (routed expert bias and/or the folded BatchNorm shift) and
optionally SiLU. Any strides: channels_last (NHWC) makes the K loads contiguous.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import ACTIVATIONS, empty_like_layout, next_pow2


@triton.jit
def _pointwise_kernel(
    x_ptr, routing_ptr, experts_ptr, expert_bias_ptr, static_bias_ptr, out_ptr,
    M, N, K, W, sen, sek,
    sxb, sxc, sxh, sxw, sob, soc, soh, sow, srb, sre,
    E: tl.constexpr, HAS_EXPERT_BIAS: tl.constexpr, HAS_STATIC_BIAS: tl.constexpr, ACT: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    tiles = (M + BLOCK_M - 1) // BLOCK_M  # not tl.cdiv: see launch.py
    pid = tl.program_id(0)
    b = (pid // tiles).to(tl.int64)  # int64: batch x channels x pixels can pass 2**31
    m = (pid % tiles) * BLOCK_M + tl.arange(0, BLOCK_M)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = m < M
    n_ok = n < N
    h = m // W
    w = m % W
    x_rows = x_ptr + b * sxb + h * sxh + w * sxw
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_ok = k < K
        a = tl.load(x_rows[:, None] + k[None, :] * sxc, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        mixed = tl.full((BLOCK_K, BLOCK_N), 0.0, tl.float32)
        for e in tl.static_range(E):
            r = tl.load(routing_ptr + b * srb + e * sre).to(tl.float32)
            we = tl.load(experts_ptr + e * N * K + n[None, :] * sen + k[:, None] * sek,
                         mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            mixed += r * we.to(tl.float32)
        acc = tl.dot(a, mixed.to(a.dtype), acc, input_precision=PRECISION)
    if HAS_EXPERT_BIAS:
        bias = tl.full((BLOCK_N,), 0.0, tl.float32)
        for e in tl.static_range(E):
            r = tl.load(routing_ptr + b * srb + e * sre).to(tl.float32)
            bias += r * tl.load(expert_bias_ptr + e * N + n, mask=n_ok, other=0.0).to(tl.float32)
        acc += bias[None, :]
    if HAS_STATIC_BIAS:
        acc += tl.load(static_bias_ptr + n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    if ACT == 1:  # SiLU
        acc = acc / (1.0 + tl.exp(-acc))
    out = out_ptr + b * sob + n[None, :] * soc + h[:, None] * soh + w[:, None] * sow
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def pointwise_cond_conv(x: torch.Tensor, routing: torch.Tensor, experts: torch.Tensor,
                        expert_bias: torch.Tensor | None = None, static_bias: torch.Tensor | None = None,
                        act: str | None = None, experts_in_out: bool = False) -> torch.Tensor:
    """``x`` [B, Cin, H, W] (any strides) times ``routing[b] @ experts`` reshaped [Cout, Cin], per sample.

    ``experts`` [E, Cout*Cin] (timm's layout), or [E, Cin*Cout] with ``experts_in_out`` (a fused model's
    pointwise CondConv, ``cc_models.fuse``). The output has ``x``'s dtype and memory format. fp32 inputs
    use TF32 only where ``torch.backends.cuda.matmul.allow_tf32`` allows it, as cuBLAS would (fp16/bf16
    dots take Triton's default, which only concerns fp32).
    """
    b, cin, h, w = x.shape
    cout = experts.shape[1] // cin
    out = empty_like_layout(x, (b, cout, h, w))
    experts = experts.contiguous()
    m = h * w
    block_m = min(128, max(16, next_pow2(m)))
    block_n = min(128, max(16, next_pow2(cout)))
    block_k = 32 if cin >= 32 else 16
    exact = x.dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32
    grid = (b * triton.cdiv(m, block_m), triton.cdiv(cout, block_n))
    dummy = experts  # an unused pointer argument still needs a tensor
    _pointwise_kernel[grid](
        x, routing, experts,
        expert_bias.contiguous() if expert_bias is not None else dummy,
        static_bias.contiguous() if static_bias is not None else dummy, out,
        m, cout, cin, w, *((1, cout) if experts_in_out else (cin, 1)),
        *x.stride(), *out.stride(), *routing.stride(),
        E=experts.shape[0], HAS_EXPERT_BIAS=expert_bias is not None, HAS_STATIC_BIAS=static_bias is not None,
        ACT=ACTIVATIONS[act], PRECISION="ieee" if exact else "tf32",
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=8 if block_m * block_n >= 128 * 128 else 4,
    )
    return out
