"""Activation layers by name, as the index spells them."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

# The index says "swish"; PyTorch's native SiLU is the same function with a fused kernel.
_ACT_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hard_swish": nn.Hardswish,
    "hardswish": nn.Hardswish,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
}


def get_act_layer(name: str | type[nn.Module] | None) -> type[nn.Module] | None:
    """Activation class for ``name`` (case-insensitive); classes and None pass through."""
    if name is None or isinstance(name, type):
        return name
    try:
        return _ACT_LAYERS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(sorted(_ACT_LAYERS))}") from None


def create_act_layer(name: str | type[nn.Module] | None, inplace: bool = False) -> nn.Module:
    """An activation module, or ``nn.Identity`` for None."""
    layer = get_act_layer(name)
    if layer is None:
        return nn.Identity()
    if layer in (nn.Sigmoid, nn.GELU):  # no inplace variant
        return layer()
    return layer(inplace=inplace)
