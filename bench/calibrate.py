"""Random weights that behave like trained ones, for comparing implementations.

A freshly initialised EfficientNet has BatchNorm statistics (0, 1), zero biases
and logits of order 1e-6: any two implementations agree within 1e-4 on it,
right or wrong. Parity checks (the tests, ``bench.compare``) first give the
model non-trivial BatchNorm terms, routing biases and classifier, then running
statistics from a few training-mode passes.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def randomize_(model: nn.Module, seed: int = 0, size: tuple[int, int] = (224, 224), batch: int = 4,
               calibration_passes: int = 2) -> nn.Module:
    """Non-trivial BatchNorm affine terms, routing biases and classifier, then BN running stats from data.

    Fresh models have BN stats (0, 1) and zero biases, which would hide mistakes
    in eps, in the order of BN and activation, or in the routing. The running
    stats come from a few training-mode passes over random images of ``size``
    (cumulative average), so activations keep a sane scale through the whole
    network when it later runs at about that size.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.BatchNorm2d):
                # Residual branches end in bn3: small gains there (as trained EfficientNets have) keep the
                # random network from amplifying small differences between inputs block after block.
                low, high = (0.1, 0.5) if name.endswith("bn3") else (0.5, 1.5)
                m.weight.uniform_(low, high, generator=g)
                m.bias.normal_(0.0, 0.2, generator=g)
            elif isinstance(m, nn.Linear):
                m.bias.normal_(0.0, 0.5, generator=g)
                if name == "classifier":
                    m.weight.normal_(0.0, 0.05, generator=g)  # logits of order 1: 1e-4 is then a tight tolerance
        momenta = [m.momentum for m in bns]
        was_training = model.training
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration passes
        model.train()
        for _ in range(calibration_passes):
            model(torch.randn(batch, 3, *size, generator=g))
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        model.train(was_training)
    return model
