"""Images per second of a model's forward pass (inference, no autograd).

The model is timed in the form a user runs for inference: BatchNorm folded
(``model.fuse()``, on a copy: the caller's model stays as built) and
channels_last.

* CPU: fp32, ``time.perf_counter`` around each batch.
* CUDA: AMP in bfloat16 and in float16 (one timing each; the record says which),
  the activations after the CondConvs folded into the Triton kernels' epilogue,
  the whole forward captured as a CUDA graph (``cc_models.cuda_graph``: batch 1
  is otherwise launch-bound), CUDA events around each replay, and the peak of
  ``torch.cuda.max_memory_allocated`` over capture and timing. cuDNN's
  autotuner is left as the user set it (the CondConv layers never need it).

Each batch size gets ``warmup`` untimed runs, then timed runs until ``repeats``
are done and ``min_time_s`` of timed runs has passed, or (after at least
``MIN_REPEATS``) once the next run would exceed ``budget_s``. The figure is batch
size / median run time. ``min_time_s`` gives short runs (batch 1 on CPU: ~15 ms)
enough samples for a stable median: with 3 runs, one noisy run on a shared
2-core machine moved batch 1 by 30% between two runs of the same code.

On CPU a fixed workload that none of our code touches (:func:`host_reference`:
torchvision's MobileNetV2, random weights, the same batch) is timed in a short
block just before and just after the model's runs. Its figure measures the
host's speed at that moment: a shared machine here ran everything 25% slower for minutes at a
time, and a regression flag must tell that from our code getting slower
(``bench.checks.throughput``).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

MIN_REPEATS = 2
REFERENCE_RUNS, REFERENCE_MIN_S = 3, 0.5  # each block of host-reference runs: at least this many, this long
AMP_DTYPES = {"bfloat16-amp": torch.bfloat16, "float16-amp": torch.float16}


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
    cuda_graph: bool = False
    peak_memory_mib: float | None = None
    reference: str | None = None  # the host reference timed beside the model (CPU), and its images/s
    reference_images_per_s: float | None = None

    def to_extra(self) -> dict:
        d = asdict(self)
        d["times_s"] = [round(t, 6) for t in self.times_s]
        d.pop("batch_size")
        d.pop("images_per_s")
        d.pop("device")
        d.pop("dtype")
        return d


def dtypes_for(device: str) -> tuple[str, ...]:
    """The dtype labels timed on ``device``, one throughput row each."""
    return tuple(AMP_DTYPES) if device == "cuda" else ("float32",)


@functools.lru_cache(maxsize=1)
def host_reference() -> tuple[str, nn.Module]:
    """The fixed CPU workload timed beside our models, with a label naming exactly what it is (a new torchvision
    may change it, and only equal labels are compared): MobileNetV2 exercises the same kinds of layers
    (depthwise and pointwise convolutions, activations) through torch alone. Built once per process."""
    import torchvision
    from torchvision.models import mobilenet_v2

    model = mobilenet_v2(weights=None).eval().to(memory_format=torch.channels_last)
    return f"torchvision {torchvision.__version__} mobilenet_v2 (random weights, float32, channels_last)", model


def prepare(model: nn.Module, device: str) -> nn.Module:
    """A fused, channels_last copy of ``model`` placed for timing on ``device``."""
    model = copy.deepcopy(model).eval().to(device)
    if hasattr(model, "fuse"):
        model.fuse()
    return model.to(memory_format=torch.channels_last)


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
            dtype: str | None = None, warmup: int = 1, repeats: int = 3, budget_s: float = 5.0,
            min_time_s: float = 0.0, advance: Callable[[float], None] | None = None,
            reference: tuple[str, nn.Module] | None = None) -> Timing:
    """Time ``model`` (already :func:`prepare`d for ``device``) on random batches of ``batch_size``; with a
    ``reference`` (label, CPU model: :func:`host_reference`), time it on the same batch in a short block just
    before the model's runs and one just after (the median of both): the host's speed while the model ran."""
    if reference is not None and device == "cuda":
        raise ValueError("the host reference is a CPU workload")
    cuda = device == "cuda"
    dtype = dtype or dtypes_for(device)[0]
    x = torch.randn(batch_size, *input_size, device=device).contiguous(memory_format=torch.channels_last)
    times: list[float] = []
    time_call = timer(device)
    if cuda:
        import cc_models

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        graph = cc_models.cuda_graph(model, x, autocast_dtype=AMP_DTYPES[dtype])

        def forward() -> object:
            return graph(x)
    else:
        def forward() -> object:
            return model(x)

    reference_times: list[float] = []

    def once() -> float:
        return time_call(forward)

    def reference_block() -> None:
        # a short block of its own, so that the model's runs follow each other as they would without it (run by
        # run alternation evicted the model's weights from cache: batch 1 of b0_4e ran 10% slower)
        spent_ref, runs = 0.0, 0
        while runs < REFERENCE_RUNS or spent_ref < REFERENCE_MIN_S:
            reference_times.append(time_call(lambda: reference[1](x)))  # the same batch
            spent_ref += reference_times[-1]
            runs += 1

    with torch.inference_mode() if not cuda else contextlib.nullcontext():  # the graph holds its own mode
        if reference is not None:
            reference[1](x)  # its warm-up
            reference_block()
        for _ in range(max(0, warmup)):
            once()
            if advance:
                advance(1)
        spent = 0.0
        while len(times) < max(1, repeats) or spent < min_time_s:
            if len(times) >= MIN_REPEATS and spent + statistics.median(times) > budget_s:
                break
            times.append(once())
            spent += times[-1]
            if advance and len(times) <= repeats:  # the progress bar counts the planned runs
                advance(1)
        if reference is not None:
            reference_block()
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    median = statistics.median(times)
    return Timing(batch_size=batch_size, images_per_s=batch_size / median, median_s=median, times_s=tuple(times),
                  warmup=warmup, device=device, dtype=dtype, channels_last=True,
                  timer="cuda events" if cuda else "time.perf_counter", cuda_graph=cuda, peak_memory_mib=peak,
                  reference=reference[0] if reference else None,
                  reference_images_per_s=batch_size / statistics.median(reference_times) if reference else None)
