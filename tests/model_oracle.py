"""Shared helpers for the cc_models tests: timm as the oracle, public anchors, weight randomisation."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

FIXTURE_INDEX = Path(__file__).parent / "fixtures" / "efficientnet_cc_index"

# Public anchors (shared/reference/anchors.md): exact parameter counts and fvcore multiply-adds at batch 1.
ANCHORS = {
    "tf_efficientnet_cc_b0_4e": {"params": 13_314_116, "fvcore": 410_171_168, "fvcore_condconv": 217_270_560},
    "tf_efficientnet_cc_b0_8e": {"params": 24_013_284, "fvcore": 420_870_304, "fvcore_condconv": 227_964_960},
    "tf_efficientnet_cc_b1_8e": {"params": 39_715_968, "fvcore": 745_303_680, "fvcore_condconv": 437_895_360},
}
VARIANTS = tuple(ANCHORS)


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


def fvcore_counts(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(total multiply-adds, those inside modules whose class is named CondConv2d)."""
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, x)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    by_module = analysis.by_module()
    condconv = sum(by_module[name] for name, m in model.named_modules() if type(m).__name__ == "CondConv2d")
    return int(analysis.total()), int(condconv)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()
