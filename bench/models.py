"""The one place the bench gets models, transforms and weight files: ``cc_models``.

The bench measures the models *as cc_models builds them* (unfused, fp32, eval);
it never builds them another way.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from registry import ModelEntry, ModelIndex


def build(entry: "ModelEntry", index: "ModelIndex", *, seed: int = 0) -> nn.Module:
    """The architecture with random (seeded) weights, fp32, eval mode, on the CPU."""
    import cc_models

    torch.manual_seed(seed)
    return cc_models.from_index(entry.id, pretrained=False, index=index).eval()


def build_pretrained(entry: "ModelEntry", index: "ModelIndex", *, checkpoint_path: Path | None = None) -> nn.Module:
    """The architecture with the entry's weights: from ``checkpoint_path`` or, without it, from the Hub.

    Raises ``cc_models.errors.WeightsError`` (``OfflineError`` when they cannot be had offline).
    """
    import cc_models

    return cc_models.from_index(entry.id, pretrained=checkpoint_path is None, checkpoint_path=checkpoint_path,
                                index=index).eval()


def eval_transform(entry: "ModelEntry", index: "ModelIndex"):
    """The entry's eval preprocessing (PIL image -> normalised tensor)."""
    import cc_models

    return cc_models.create_transform(entry.id, train=False, index=index)


def local_checkpoint(entry: "ModelEntry", checkpoint_dir: Path | None) -> Path | None:
    """The entry's weights in ``--checkpoint-dir``, if there: the release file ``<name>-<sha8>.pth``
    (its SHA-256 prefix checked) or a folder named after the model id holding ``model.safetensors``,
    ``pytorch_model.bin`` or the release file."""
    if checkpoint_dir is None:
        return None
    from cc_models.weights import find_release_file

    if entry.release is not None:
        found = find_release_file(entry, checkpoint_dir)
        if found is not None:
            return found
    folder = Path(checkpoint_dir) / entry.id
    return folder if folder.is_dir() else None


def release_file(entry: "ModelEntry", checkpoint_dir: Path | None) -> Path:
    """The entry's release file: found in ``checkpoint_dir`` or torch.hub's folder, else downloaded
    (into ``checkpoint_dir`` when given, else torch.hub's ``checkpoints/``) through ``cc_models``.

    Raises ``cc_models.errors.WeightsError`` subclasses (``OfflineError`` offline).
    """
    from cc_models.weights import fetch_release_file, find_release_file

    for folder in ([checkpoint_dir] if checkpoint_dir is not None else []) + [None]:
        found = find_release_file(entry, folder)
        if found is not None:
            return found
    dest = Path(checkpoint_dir) if checkpoint_dir is not None else Path(torch.hub.get_dir()) / "checkpoints"
    return fetch_release_file(entry, dest)
