"""Time the CPU inference form's convolution choices side by side (``cc_models.onednn``, ``padding_in_kernel``,
``cc_models.cpu_kernels``).

    python -m bench.conv_forms [--threads 2] [--batches 1 32] [--repeats 21]

For B0's stride-2 TF "SAME" convolutions: the input copied into a padded buffer
(what timm and the unfused model do) against the kernel grown by a leading zero
tap. For B0's large conv + SiLU pairs: ``F.conv2d`` then an in-place SiLU against
oneDNN's fused convolution with packed weights and the SiLU as a post-op. For
B0's depthwise CondConvs (experts folded, SiLU after): the layer's PyTorch form
(the batch folded into the channels, one oneDNN grouped convolution) against the
C++ kernel, and the same layer with one shared kernel (what the plain model runs:
the floor CondConv is measured against). For its pointwise CondConvs (experts folded and stored [Cin, Cout], SiLU
after the expansions): the batched product of the mixed kernels against the C++ GEMM that mixes each sample's
kernel as its packing step (AVX-512 builds), and one shared kernel through oneDNN.
Each row times its forms interleaved in one process after ``tune_cpu`` (fp32,
channels_last, inference mode) and prints milliseconds and the ratio to the first form.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

# (name, in, out, kernel, groups, H=W of the input)
STRIDE_2 = [
    ("stem 3->32 k3 @224", 3, 32, 3, 1, 224),
    ("dw 96 k3 @112", 96, 96, 3, 96, 112),
    ("dw 144 k5 @56", 144, 144, 5, 144, 56),
    ("dw 672 k5 @14", 672, 672, 5, 672, 14),
]
CONV_SILU = [
    ("pw 16->96 @112", 16, 96, 1, 1, 112),
    ("dw 32 k3 @112", 32, 32, 3, 32, 112),
    ("pw 24->144 @56", 24, 144, 1, 1, 56),
    ("pw 192->1152 @7", 192, 1152, 1, 1, 7),
]

# (name, channels, kernel, stride, H=W of the input): tf_efficientnet_cc_b0's depthwise CondConvs
DEPTHWISE_CONDCONV = [
    ("dw 480 k5 @14", 480, 5, 1, 14),
    ("dw 672 k5 @14", 672, 5, 1, 14),
    ("dw 672 k5 s2 @14", 672, 5, 2, 14),
    ("dw 1152 k5 @7", 1152, 5, 1, 7),
    ("dw 1152 k3 @7", 1152, 3, 1, 7),
]


def interleaved(forms: dict[str, Callable[[], torch.Tensor]], repeats: int) -> dict[str, float]:
    """Median milliseconds per call of each form, the forms taking turns."""
    times: dict[str, list[float]] = {name: [] for name in forms}
    for _ in range(repeats + 3):
        for name, fn in forms.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t[3:]) * 1e3 for name, t in times.items()}


def stride2_forms(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, groups: int) -> dict[str, Callable]:
    from cc_models.layers.padding import padding_in_kernel, same_pad_amounts

    k = w.shape[-1]
    pads = same_pad_amounts(x.shape[-2], x.shape[-1], k, k, 2, 2, 1, 1)
    kernel_pad, padding = padding_in_kernel(pads, (1, 1))
    grown = F.pad(w, kernel_pad)
    return {"padded copy": lambda: F.conv2d(F.pad(x, pads), w, b, 2, 0, 1, groups),
            "in kernel": lambda: F.conv2d(x, grown, b, 2, padding, 1, groups)}


def conv_silu_forms(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, groups: int) -> dict[str, Callable]:
    pad = w.shape[-1] // 2
    packed = torch.ops.mkldnn._reorder_convolution_weight(w, [pad, pad], [1, 1], [1, 1], groups, list(x.shape))
    return {"conv + silu_": lambda: F.silu(F.conv2d(x, w, b, 1, pad, 1, groups), inplace=True),
            "oneDNN packed + post-op": lambda: torch.ops.mkldnn._convolution_pointwise(
                x, packed, b, [pad, pad], [1, 1], [1, 1], groups, "swish", [], "")}


def condconv_dw_forms(bs: int, channels: int, k: int, stride: int, hw: int) -> dict[str, Callable]:
    import os

    from cc_models import cpu_kernels
    from cc_models.layers import CondConv2d, create_conv2d

    torch.manual_seed(0)
    cond = CondConv2d(channels, channels, k, stride, padding="same", groups=channels, num_experts=4).eval()
    cond.static_bias, cond.epilogue_act, cond.inference = torch.randn(channels), "silu", True
    plain = create_conv2d(channels, channels, k, stride, groups=channels, padding="same").eval()
    plain.bias = torch.nn.Parameter(torch.randn(channels))
    plain.epilogue_act, plain.inference = "silu", True
    x = torch.randn(bs, channels, hw, hw).contiguous(memory_format=torch.channels_last)
    routing = torch.rand(bs, 4)

    def pytorch_form():
        os.environ[cpu_kernels.ENV_SWITCH] = "0"
        try:
            return cond(x, routing)
        finally:
            os.environ.pop(cpu_kernels.ENV_SWITCH)

    return {"grouped (PyTorch form)": pytorch_form, "C++ kernel": lambda: cond(x, routing),
            "one shared kernel": lambda: plain(x)}


# (name, in, out, H=W, SiLU after): tf_efficientnet_cc_b0's pointwise CondConvs
POINTWISE_CONDCONV = [
    ("pw 80->480 @14", 80, 480, 14, True),
    ("pw 672->112 @14", 672, 112, 14, False),
    ("pw 192->1152 @7", 192, 1152, 7, True),
    ("pw 1152->320 @7", 1152, 320, 7, False),
]


def condconv_pw_forms(bs: int, cin: int, cout: int, hw: int, silu: bool, experts: int) -> dict[str, Callable]:
    from cc_models import cpu_kernels, onednn
    from cc_models.fuse import _experts_in_out_
    from cc_models.layers import CondConv2d

    torch.manual_seed(0)
    cond = CondConv2d(cin, cout, 1, 1, padding="same", num_experts=experts).eval()
    cond.static_bias, cond.epilogue_act, cond.inference = torch.randn(cout), "silu" if silu else None, True
    _experts_in_out_(cond)
    x = torch.randn(bs, cin, hw, hw).contiguous(memory_format=torch.channels_last)
    routing = torch.rand(bs, experts)
    w, b = torch.randn(cout, cin, 1, 1), torch.randn(cout)
    packed = (torch.ops.mkldnn._reorder_convolution_weight(w, [0, 0], [1, 1], [1, 1], 1, list(x.shape))
              if onednn.available() else None)
    bias = cond._mixed_bias(routing)

    def batched_product():
        weight = torch.matmul(routing, cond.weight)
        if silu:
            return cond._forward_bmm_silu(x, weight, bias)
        return cond._forward_bmm(x, weight, bias.expand(bs, -1))

    forms = {"batched product": batched_product}
    if cpu_kernels._has_pointwise():
        forms["C++ GEMM"] = lambda: cpu_kernels.pointwise(cond, x, routing, bias)
    if packed is not None:
        forms["one shared kernel"] = lambda: torch.ops.mkldnn._convolution_pointwise(
            x, packed, b, [0, 0], [1, 1], [1, 1], 1, "swish" if silu else "none", [], "")
    return forms


def print_row(title: str, forms: dict[str, Callable], repeats: int) -> None:
    """Times ``forms`` interleaved and prints one row: each form's milliseconds and its ratio to the first."""
    ms = interleaved(forms, repeats)
    base = next(iter(ms.values()))
    cells = "; ".join(f"{form} {t:.3f} ({base / t:.2f}x)" for form, t in ms.items())
    print(f"{title}: {cells}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.conv_forms", description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--experts", type=int, nargs="+", default=[4, 8], help="expert counts for the pointwise CondConvs")
    args = p.parse_args(argv)
    from cc_models import onednn
    from cc_models.runtime import tune_cpu

    tune_cpu(args.threads)
    print(f"{torch.get_num_threads()} threads, fp32, channels_last, median of {args.repeats} interleaved calls (ms)")
    with torch.inference_mode():
        for title, shapes, forms in (("TF SAME, stride 2", STRIDE_2, stride2_forms),
                                     ("conv + SiLU", CONV_SILU, conv_silu_forms)):
            if forms is conv_silu_forms and not onednn.available():
                print(f"{title}: skipped, this torch has no x86 oneDNN fused convolution")
                continue
            for bs in args.batches:
                for name, cin, cout, k, groups, hw in shapes:
                    x = torch.randn(bs, cin, hw, hw).contiguous(memory_format=torch.channels_last)
                    w, b = torch.randn(cout, cin // groups, k, k), torch.randn(cout)
                    print_row(f"{title} bs={bs} {name}", forms(x, w, b, groups), args.repeats)
        from cc_models import cpu_kernels

        if not cpu_kernels.available():
            print(f"depthwise CondConv: skipped, the C++ kernel is unavailable ({cpu_kernels.failure() or 'disabled'})")
            return 0
        for bs in args.batches:
            for name, channels, k, stride, hw in DEPTHWISE_CONDCONV:
                print_row(f"depthwise CondConv + SiLU bs={bs} {name}", condconv_dw_forms(bs, channels, k, stride, hw),
                          args.repeats)
        for experts in args.experts:
            for bs in args.batches:
                for name, cin, cout, hw, silu in POINTWISE_CONDCONV:
                    print_row(f"pointwise CondConv, {experts} experts, bs={bs} {name}",
                              condconv_pw_forms(bs, cin, cout, hw, silu, experts), args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
