"""timm's feature API: ``feature_info``, ``features_only`` backbones, intermediate-layer selection.

Feature maps are taken where timm takes them for EfficientNet ("bottleneck"
location): at the end of every stage after which the resolution halves, and
after the last stage. ``feature_info`` lists them as timm does (``stage``
counted from 1 in the block stack, ``reduction``, ``module``, ``num_chs``,
``index``), so detection and segmentation code written against timm reads ours
unchanged.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
import torch.nn as nn

OutIndices = int | Sequence[int]


def take_indices(num_features: int, indices: OutIndices | None = None) -> tuple[list[int], int]:
    """(absolute indices, largest) for ``indices``: None all, an int the last n, a sequence as given (-1 = last)."""
    if indices is None:
        indices = num_features
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(f"last-n ({indices}) is out of range (1 to {num_features})")
        taken = list(range(num_features - indices, num_features))
    else:
        taken = []
        for i in indices:
            idx = num_features + i if i < 0 else i
            if not 0 <= idx < num_features:
                raise ValueError(f"feature index {idx} is out of range (0 to {num_features - 1})")
            taken.append(idx)
        if not taken:
            raise ValueError("no feature index given")
    return taken, max(taken)


class FeatureInfo:
    """The feature maps a backbone offers and which of them it returns (timm's ``FeatureInfo`` interface)."""

    def __init__(self, info: list[dict[str, Any]], out_indices: OutIndices) -> None:
        self.info = [dict(fi, index=i) for i, fi in enumerate(info)]
        # timm: an int means the last n; negative indices count from the end.
        self.out_indices = tuple(range(-out_indices, 0)) if isinstance(out_indices, int) else tuple(out_indices)
        take_indices(len(self.info), self.out_indices)  # validates

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None):
        def pick(fi: dict[str, Any]) -> dict[str, Any]:
            return fi if keys is None else {k: fi[k] for k in keys}
        if idx is None:
            return [pick(self.info[i]) for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [pick(self.info[i]) for i in idx]
        return pick(self.info[idx])

    def channels(self, idx: int | Sequence[int] | None = None):
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None):
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None):
        return self.get("module", idx)

    def __getitem__(self, item: int) -> dict[str, Any]:
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)


def block_out_channels(block: nn.Module) -> int:
    """Output channels of one EfficientNet block (its last BatchNorm's width)."""
    bn = getattr(block, "bn3", None) or block.bn2
    return bn.num_features


def stage_features(stages: nn.Sequential, strides: Sequence[int], stem_stride: int = 2) -> list[dict[str, Any]]:
    """timm's bottleneck feature taps of a block stack: one per stage before a stride, plus the last stage."""
    info, reduction = [], stem_stride
    for i, stage in enumerate(stages):
        reduction *= strides[i]
        if i == len(stages) - 1 or strides[i + 1] > 1:
            info.append({"stage": i + 1, "reduction": reduction, "module": f"blocks.{i}",
                         "num_chs": block_out_channels(stage[-1])})
    return info


class EfficientNetFeatures(nn.Module):
    """A ``features_only`` backbone: stem and blocks of an EfficientNet, returning the chosen feature maps.

    Holds the model's own ``conv_stem``, ``bn1`` and ``blocks`` (no copy), so its state-dict keys are
    timm's ``EfficientNetFeatures`` keys and the pretrained weights loaded before carry over.
    """

    def __init__(self, model: nn.Module, out_indices: OutIndices = (0, 1, 2, 3, 4)) -> None:
        super().__init__()
        self.conv_stem, self.bn1, self.blocks = model.conv_stem, model.bn1, model.blocks
        self.feature_info = FeatureInfo(copy.deepcopy(model.feature_info), out_indices)
        self._stage_out_idx = {f["stage"]: f["index"] for f in self.feature_info.get_dicts()}
        self.entry = getattr(model, "entry", None)
        self.data_config = getattr(model, "data_config", None)
        self.pretrained_cfg = dict(getattr(model, "pretrained_cfg", {}))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.bn1(self.conv_stem(x))
        features = []
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i + 1 in self._stage_out_idx:
                features.append(x)
        return features
