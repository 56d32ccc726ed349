"""A CUDA-graph form of a model for fixed-shape inference (batch 1 is launch-bound in eager mode).

A CUDA graph records every kernel launch of one forward pass once and replays
them with one call: at batch 1 the GPU otherwise waits on Python and the
launches. The input's shape, dtype and layout are fixed at capture; each call
copies the input into the captured buffer, replays, and returns the captured
output buffer (overwritten by the next call: clone it to keep it).
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn


def cuda_graph(model: nn.Module, example: torch.Tensor, *, autocast_dtype: torch.dtype | None = None,
               warmup: int = 3) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model`` (on CUDA, eval) captured for inputs like ``example``; returns ``run(x) -> logits``.

    ``autocast_dtype`` (torch.float16 / torch.bfloat16) records the forward under AMP. The warm-up
    runs on a side stream first, so that lazy initialisation and kernel compilation stay out of the graph.
    """
    if not example.is_cuda:
        raise ValueError("cuda_graph needs a CUDA example input (and the model on the same device)")

    def amp() -> contextlib.AbstractContextManager:
        # no autocast weight cache: cached casts made during capture would be freed under the graph's feet
        return (torch.autocast("cuda", dtype=autocast_dtype, cache_enabled=False) if autocast_dtype
                else contextlib.nullcontext())

    static_in = example.clone(memory_format=torch.preserve_format)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.inference_mode(), amp():
        for _ in range(max(1, warmup)):
            model(static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), amp(), torch.cuda.graph(graph):
        static_out = model(static_in)

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.shape != static_in.shape:
            raise ValueError(f"this CUDA graph was captured for input shape {tuple(static_in.shape)}, "
                             f"got {tuple(x.shape)}")
        static_in.copy_(x)
        graph.replay()
        return static_out

    return run
