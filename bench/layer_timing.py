"""Time CondConv compute strategies on CPU, to choose the one ``CondConv2d`` uses.

    python bench/layer_timing.py [--threads 2] [--batches 1 32] [--repeats 20]

Shapes are the CondConv layers of tf_efficientnet_cc_b0 (stages 5-7, 224 px).
Prints milliseconds per call (median of repeats) and each alternative's ratio to
timm's strategy (one grouped convolution over the whole batch). fp32, eval, no grad.
Standalone on purpose: it re-implements the alternatives instead of importing
cc_models or timm, so it measures the strategies, not any wrapper around them.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

# (name, in, out, kernel, stride, H=W of the input)
POINTWISE = [
    ("pw 112->672 @14", 112, 672, 14),
    ("pwl 672->112 @14", 672, 112, 14),
    ("pwl 672->192 @7", 672, 192, 7),
    ("pw 192->1152 @7", 192, 1152, 7),
    ("pwl 1152->320 @7", 1152, 320, 7),
]
DEPTHWISE = [
    ("dw 672 k5 s1 @14", 672, 5, 1, 14),
    ("dw 672 k5 s2 @14", 672, 5, 2, 14),
    ("dw 1152 k5 s1 @7", 1152, 5, 1, 7),
    ("dw 1152 k3 s1 @7", 1152, 3, 1, 7),
]


def pw_grouped(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """timm: the batch folded into channels, one conv with groups=B."""
    b, c, h, wd = x.shape
    o = w.shape[1]
    out = F.conv2d(x.reshape(1, b * c, h, wd), w.reshape(b * o, c, 1, 1), groups=b)
    return out.view(b, o, h, wd)


def pw_bmm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """[B, Cout, Cin] @ [B, Cin, HW]."""
    b, c, h, wd = x.shape
    return torch.bmm(w, x.reshape(b, c, h * wd)).view(b, w.shape[1], h, wd)


def pw_bmm_nhwc(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """[B, HW, Cin] @ [B, Cin, Cout]: the result is channels_last."""
    b, c, h, wd = x.shape
    out = torch.bmm(x.permute(0, 2, 3, 1).reshape(b, h * wd, c), w.transpose(1, 2))
    return out.view(b, h, wd, -1).permute(0, 3, 1, 2)


def pw_bmm_in_out(x: torch.Tensor, w_in_out: torch.Tensor) -> torch.Tensor:
    """[B, HW, Cin] @ [B, Cin, Cout] with the kernel already [Cin, Cout] (a fused model's expert layout)."""
    b, c, h, wd = x.shape
    out = torch.bmm(x.permute(0, 2, 3, 1).reshape(b, h * wd, c), w_in_out)
    return out.view(b, h, wd, -1).permute(0, 3, 1, 2)


def pw_loop(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """One ordinary 1x1 conv per sample."""
    return torch.cat([F.conv2d(x[i:i + 1], w[i, :, :, None, None]) for i in range(x.shape[0])])


def dw_grouped(x: torch.Tensor, w: torch.Tensor, stride: int, pad: int) -> torch.Tensor:
    """timm: groups = B * C over the batch folded into channels."""
    b, c, h, wd = x.shape
    out = F.conv2d(x.reshape(1, b * c, h, wd), w.reshape(b * c, 1, *w.shape[-2:]), stride=stride, padding=pad,
                   groups=b * c)
    return out.view(b, c, out.shape[-2], out.shape[-1])


def dw_loop(x: torch.Tensor, w: torch.Tensor, stride: int, pad: int) -> torch.Tensor:
    """One depthwise conv (groups=C) per sample."""
    c = x.shape[1]
    return torch.cat([F.conv2d(x[i:i + 1], w[i], stride=stride, padding=pad, groups=c) for i in range(x.shape[0])])


def timeit(fn: Callable[[], torch.Tensor], repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, fp32, ms per call (median of {args.repeats})")
    with torch.inference_mode():
        for b in args.batches:
            print(f"\nbatch {b}: pointwise CondConv (ratio = time / grouped)")
            for name, cin, cout, hw in POINTWISE:
                x = torch.randn(b, cin, hw, hw)
                w = torch.randn(b, cout, cin)
                ref = pw_grouped(x, w)
                row = {}
                xcl, w_in_out = x.contiguous(memory_format=torch.channels_last), w.transpose(1, 2).contiguous()
                for label, fn, xin, win in (("grouped", pw_grouped, x, w), ("bmm", pw_bmm, x, w),
                                            ("loop", pw_loop, x, w), ("bmm_nhwc(cl in)", pw_bmm_nhwc, xcl, w),
                                            ("bmm(cl in)", pw_bmm, xcl, w),
                                            ("bmm_in_out(cl in)", pw_bmm_in_out, xcl, w_in_out),
                                            ("bmm_in_out", pw_bmm_in_out, x, w_in_out)):
                    torch.testing.assert_close(fn(xin, win), ref, rtol=1e-4, atol=1e-3)
                    row[label] = timeit(lambda: fn(xin, win), args.repeats)
                base = row["grouped"]
                print(f"  {name:20s} " + "  ".join(f"{k} {v:7.3f} ({v / base:4.2f}x)" for k, v in row.items()))
            print(f"batch {b}: depthwise CondConv")
            for name, c, k, s, hw in DEPTHWISE:
                x = torch.randn(b, c, hw, hw)
                w = torch.randn(b, c, 1, k, k)
                pad = k // 2
                ref = dw_grouped(x, w, s, pad)
                row = {}
                xcl = x.contiguous(memory_format=torch.channels_last)
                for label, fn, xin in (("grouped", dw_grouped, x), ("loop", dw_loop, x),
                                       ("grouped(cl in)", dw_grouped, xcl), ("loop(cl in)", dw_loop, xcl)):
                    torch.testing.assert_close(fn(xin, w, s, pad), ref, rtol=1e-4, atol=1e-3)
                    row[label] = timeit(lambda: fn(xin, w, s, pad), args.repeats)
                base = row["grouped"]
                print(f"  {name:20s} " + "  ".join(f"{k} {v:7.3f} ({v / base:4.2f}x)" for k, v in row.items()))


if __name__ == "__main__":
    main()
