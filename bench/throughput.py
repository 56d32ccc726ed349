"""Images per second of a model's forward pass (inference, no autograd).

The model is timed in the form a user runs for inference: BatchNorm folded
(``model.fuse()``, on a copy: the caller's model stays as built) and
channels_last.

* CPU: fp32, ``time.perf_counter`` around each batch.
* CUDA: AMP (float16 autocast), CUDA events around each batch (with a
  synchronise), as timm's benchmark script measures.

Each batch size gets ``warmup`` untimed runs, then timed runs until ``repeats``
are done, or (after at least ``MIN_REPEATS``) once the next run would exceed
``budget_s``. The figure is batch size / median run time.
"""
from __future__ import annotations

import contextlib
import copy
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

MIN_REPEATS = 2


@dataclass(frozen=True)
class Timing:
    batch_size: int
    images_per_s: float
    median_s: float
    times_s: tuple[float, ...]
    warmup: int
    device: str
    dtype: str
    channels_last: bool
    timer: str

    def to_extra(self) -> dict:
        d = asdict(self)
        d["times_s"] = [round(t, 6) for t in self.times_s]
        d.pop("batch_size")
        d.pop("images_per_s")
        d.pop("device")
        d.pop("dtype")
        return d


def settings_for(device: str) -> tuple[str, bool]:
    """``(dtype label, channels_last)`` used on ``device``."""
    return ("float16-amp", True) if device == "cuda" else ("float32", True)


def prepare(model: nn.Module, device: str) -> nn.Module:
    """A fused copy of ``model`` placed for timing on ``device``."""
    _, channels_last = settings_for(device)
    model = copy.deepcopy(model).eval().to(device)
    if hasattr(model, "fuse"):
        model.fuse()
    if device == "cuda":
        torch.backends.cudnn.benchmark = True  # pick the fastest kernels during warm-up, as timm's benchmark does
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def timer(device: str) -> Callable[[Callable[[], object]], float]:
    """A function timing one call in seconds: CUDA events (then a synchronise) on ``cuda``, else perf_counter."""
    if device == "cuda":
        def cuda_time(fn: Callable[[], object]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000.0
        return cuda_time

    def cpu_time(fn: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    return cpu_time


def measure(model: nn.Module, input_size: tuple[int, int, int], batch_size: int, *, device: str = "cpu",
            warmup: int = 1, repeats: int = 3, budget_s: float = 5.0,
            advance: Callable[[float], None] | None = None) -> Timing:
    """Time ``model`` (already :func:`prepare`d for ``device``) on random batches of ``batch_size``."""
    dtype, channels_last = settings_for(device)
    cuda = device == "cuda"
    x = torch.randn(batch_size, *input_size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast("cuda", dtype=torch.float16) if cuda else contextlib.nullcontext()
    times: list[float] = []
    time_call = timer(device)

    def once() -> float:
        return time_call(lambda: model(x))

    with torch.inference_mode(), autocast:
        for _ in range(max(0, warmup)):
            once()
            if advance:
                advance(1)
        spent = 0.0
        while len(times) < max(1, repeats):
            if len(times) >= MIN_REPEATS and spent + statistics.median(times) > budget_s:
                break
            times.append(once())
            spent += times[-1]
            if advance:
                advance(1)
    median = statistics.median(times)
    return Timing(batch_size=batch_size, images_per_s=batch_size / median, median_s=median, times_s=tuple(times),
                  warmup=warmup, device=device, dtype=dtype, channels_last=channels_last,
                  timer="cuda events" if cuda else "time.perf_counter")
