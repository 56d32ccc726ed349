"""Count a model's compute two independent ways.

* fvcore (``FlopCountAnalysis``): **multiply-adds** (one per multiply-accumulate),
  the convention of the index's ``FLOPs`` field. It traces the model with
  ``torch.jit`` and counts the ops it has handlers for (convolutions, matmuls,
  linear, batch norm, adaptive pooling, ...); every other op it meets is
  *skipped* and listed in :attr:`FvcoreCount.skipped_ops`, never hidden.
* ``torch.utils.flop_counter.FlopCounterMode``: **FLOPs, 2 per multiply-add**,
  counting convolutions and matrix products only (no batch norm or pooling).

So ``flop_counter / 2`` should sit a few percent under fvcore's figure; a large
gap means one of the counters did not see part of the network.
"""
from __future__ import annotations

import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class FvcoreCount:
    macs: int
    by_operator: dict[str, int]
    skipped_ops: dict[str, int]  # op name -> how many times fvcore met it without a handler
    uncalled_modules: int  # submodules never called in the traced forward (e.g. identity dropouts)


@dataclass(frozen=True)
class FlopCounterCount:
    flops: int  # 2 per multiply-add
    by_operator: dict[str, int] = field(default_factory=dict)

    @property
    def macs(self) -> float:
        return self.flops / 2


def example_input(input_size: tuple[int, int, int], batch_size: int = 1) -> torch.Tensor:
    return torch.zeros(batch_size, *input_size)


def fvcore_count(model: nn.Module, inputs: torch.Tensor) -> FvcoreCount:
    """fvcore multiply-adds of ``model(inputs)``; warnings silenced, skipped ops reported."""
    from fvcore.nn import FlopCountAnalysis

    loggers = [logging.getLogger(name) for name in ("fvcore", "fvcore.nn.jit_analysis")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            analysis = FlopCountAnalysis(model, inputs)
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            total = int(analysis.total())
            by_operator = {str(k): int(v) for k, v in analysis.by_operator().items()}
            skipped = Counter({str(k): int(v) for k, v in analysis.unsupported_ops().items()})
            uncalled = len(analysis.uncalled_modules())
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    return FvcoreCount(macs=total, by_operator=by_operator, skipped_ops=dict(sorted(skipped.items())),
                       uncalled_modules=uncalled)


def flop_counter_count(model: nn.Module, inputs: torch.Tensor) -> FlopCounterCount:
    """``torch.utils.flop_counter`` FLOPs (2 per multiply-add) of ``model(inputs)``."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(inputs)
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return FlopCounterCount(flops=int(counter.get_total_flops()), by_operator=by_op)
