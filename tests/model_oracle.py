"""Shared helpers for the cc_models tests: timm as the oracle, public anchors, weight randomisation."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from bench.calibrate import randomize_  # noqa: F401  (shared with bench.compare)
from constants import ANCHORS  # noqa: F401  (re-exported for the model tests)
from constants import MODEL_IDS as VARIANTS  # noqa: F401  (re-exported)

FIXTURE_INDEX = Path(__file__).parent / "fixtures" / "efficientnet_cc_index"


def timm_and_ours(name: str, seed: int = 1) -> tuple[nn.Module, nn.Module]:
    """timm's model with randomised weights and ours holding them (loaded strictly), both in eval mode."""
    import timm

    import cc_models

    torch.manual_seed(0)  # timm's initialisation draws from the global generator
    size = cc_models.data_config(name).input_size[1:]
    theirs = randomize_(timm.create_model(name), seed=seed, size=size).eval()
    ours = cc_models.from_index(name).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return theirs, ours


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
