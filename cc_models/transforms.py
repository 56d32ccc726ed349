"""Preprocessing from an entry's ``DataConfig`` (torchvision; pixel-identical to timm's eval transform)."""
from __future__ import annotations

import math

import torch
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from registry import DataConfig

__all__ = ["eval_transform", "train_transform", "transform_from_config", "interpolation_mode"]

_INTERPOLATION = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "box": InterpolationMode.BOX,
    "hamming": InterpolationMode.HAMMING,
    "lanczos": InterpolationMode.LANCZOS,
}


def interpolation_mode(name: str) -> InterpolationMode:
    try:
        return _INTERPOLATION[name.lower()]
    except KeyError:
        raise ValueError(f"unknown interpolation {name!r}; known: {', '.join(_INTERPOLATION)}") from None


def _square_size(config: DataConfig) -> int:
    _, height, width = config.input_size
    if height != width:
        raise ValueError(f"only square input sizes are supported, got {height}x{width}")
    return height


def _normalize(config: DataConfig) -> transforms.Normalize:
    # float32 tensors, as timm passes them, so the arithmetic (and every output bit) is the same.
    return transforms.Normalize(mean=torch.tensor(config.mean), std=torch.tensor(config.std))


def eval_transform(config: DataConfig) -> transforms.Compose:
    """Resize the shorter side to ``floor(size / crop_pct)``, center-crop ``size``, to tensor, normalize.

    Takes a PIL image; returns a float32 [3, size, size] tensor. Equals
    ``timm.data.create_transform(**resolve_data_config({}, model=...))``.
    """
    size = _square_size(config)
    scale = math.floor(size / config.crop_pct)
    interpolation = interpolation_mode(config.interpolation)
    if config.crop_mode == "center":  # keep the aspect ratio: scale the shorter side
        resize = transforms.Resize(scale, interpolation=interpolation)
    elif config.crop_mode == "squash":  # scale both sides, aspect ratio not kept
        resize = transforms.Resize((scale, scale), interpolation=interpolation)
    else:
        raise ValueError(f"unsupported crop mode {config.crop_mode!r}; expected 'center' or 'squash'")
    return transforms.Compose([resize, transforms.CenterCrop(size), transforms.ToTensor(), _normalize(config)])


def train_transform(config: DataConfig, scale: tuple[float, float] = (0.08, 1.0),
                    ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: float = 0.5) -> transforms.Compose:
    """Inception-style augmentation: random resized crop, horizontal flip, to tensor, normalize."""
    size = _square_size(config)
    steps = [transforms.RandomResizedCrop(size, scale=scale, ratio=ratio,
                                          interpolation=interpolation_mode(config.interpolation))]
    if hflip > 0:
        steps.append(transforms.RandomHorizontalFlip(hflip))
    return transforms.Compose(steps + [transforms.ToTensor(), _normalize(config)])


def transform_from_config(config: DataConfig, train: bool = False) -> transforms.Compose:
    return train_transform(config) if train else eval_transform(config)
