"""Squeeze-and-excitation as EfficientNet uses it (1x1 convs with bias, sigmoid gate)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .activations import create_act_layer


class SqueezeExcite(nn.Module):
    inference = False  # class default too: a model pickled before this attribute existed still runs
    def __init__(self, channels: int, rd_channels: int, act_layer: str | type[nn.Module] = "swish") -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, rd_channels, 1, bias=True)
        self.act1 = create_act_layer(act_layer, inplace=True)
        self.conv_expand = nn.Conv2d(rd_channels, channels, 1, bias=True)
        self.gate = nn.Sigmoid()
        self.inference = False  # set by cc_models.fuse.fold_activations_

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inference and not torch.jit.is_tracing():
            return x * self.inference_gate(x)[:, :, None, None]
        # x.mean, not adaptive_avg_pool2d: the same op timm uses, so FLOP counters see the same graph.
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.conv_expand(self.act1(self.conv_reduce(x_se)))
        return x * self.gate(x_se)

    def inference_gate(self, x: torch.Tensor) -> torch.Tensor:
        """The gate [B, C] with the 1x1 convs on a 1x1 map as matrix products and the mean's division
        riding in the first one (``alpha``): 0.6-0.8x the time of the module form on B0's shapes."""
        reduce, expand = self.conv_reduce, self.conv_expand
        pooled = x.sum((2, 3))
        hidden = torch.addmm(reduce.bias, pooled, reduce.weight.flatten(1).t(), alpha=1.0 / (x.shape[-2] * x.shape[-1]))
        return torch.addmm(expand.bias, self.act1(hidden), expand.weight.flatten(1).t()).sigmoid_()
