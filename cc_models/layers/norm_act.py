"""BatchNorm followed by an activation, in one module.

Subclassing ``nn.BatchNorm2d`` (instead of wrapping it) keeps the state-dict
keys ``bnX.weight``/``bnX.running_mean``/... exactly where timm has them.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .activations import create_act_layer


class BatchNormAct2d(nn.BatchNorm2d):
    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        act_layer: str | type[nn.Module] | None = None,
        apply_act: bool = True,
        inplace: bool = True,
    ) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.act = create_act_layer(act_layer if apply_act else None, inplace=inplace)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))
