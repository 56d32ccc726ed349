"""Small numeric helpers shared by layers and model builders."""
from __future__ import annotations

from itertools import repeat
from typing import Any


def to_2tuple(value: Any) -> tuple:
    """``3`` -> ``(3, 3)``; tuples and lists pass through as tuples."""
    if isinstance(value, (tuple, list)):
        return tuple(value)
    return tuple(repeat(value, 2))


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (TF EfficientNet / timm rule).

    Never rounds down by more than ``1 - round_limit``: checkpoints depend on these
    exact channel counts, so the rule is copied, not approximated.
    """
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < round_limit * value:
        new_value += divisor
    return new_value
