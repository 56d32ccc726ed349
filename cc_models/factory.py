"""Models, data configs and transforms by model id, from the index.

>>> import cc_models
>>> model = cc_models.from_index("tf_efficientnet_cc_b0_4e")              # random weights
>>> model = cc_models.from_index("tf_efficientnet_cc_b0_4e", pretrained=True, num_classes=10)
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import torch.nn as nn
from torchvision import transforms as T

import registry
from registry import ArchitectureConfig, DataConfig, ModelEntry, ModelIndex

from .efficientnet import build_efficientnet
from .hub_config import HF_HUB_PREFIX, entry_for_hub_repo
from .transforms import transform_from_config

__all__ = ["build_model", "create_transform", "data_config", "from_index", "get_entry", "list_models",
           "pretrained_cfg"]

IndexLike = ModelIndex | str | Path | None

# Architecture family (``Architecture Config: Family``) -> builder; one entry per model family, as timm registers them.
_BUILDERS: dict[str, Callable[[ArchitectureConfig], nn.Module]] = {
    "efficientnet": build_efficientnet,
}
_ARCH_FIELDS = frozenset(f.name for f in dataclasses.fields(ArchitectureConfig))


def _index(index: IndexLike) -> ModelIndex:
    if index is None:
        return registry.default_index()
    if isinstance(index, ModelIndex):
        return index
    return registry.load(index)


def get_entry(model_id: str | ModelEntry, index: IndexLike = None) -> ModelEntry:
    """The index entry for ``model_id`` (``index``: a ModelIndex, a path to another index root, or the packaged one)."""
    if isinstance(model_id, ModelEntry):
        return model_id
    return _index(index).get(model_id)


def list_models(index: IndexLike = None) -> list[str]:
    """Model ids in the index, in definition order."""
    return list(_index(index).ids)


def data_config(model_id: str | ModelEntry, index: IndexLike = None) -> DataConfig:
    """Eval preprocessing of ``model_id``'s weights."""
    return get_entry(model_id, index).data


def create_transform(model_id: str | ModelEntry, train: bool = False, index: IndexLike = None) -> T.Compose:
    """The preprocessing ``model_id`` expects (eval: resize, center crop, normalize; train: augmenting)."""
    return transform_from_config(data_config(model_id, index), train=train)


def pretrained_cfg(entry: ModelEntry) -> dict[str, Any]:
    """timm-style ``pretrained_cfg`` dict, so timm's data helpers (``resolve_data_config``) work on our models."""
    data = entry.data
    cfg: dict[str, Any] = {
        "architecture": entry.id,
        "url": entry.weights or "",
        "num_classes": data.num_classes,
        "first_conv": "conv_stem",
        "classifier": "classifier",
        **data.as_timm_dict(),
    }
    if entry.hub is not None:
        cfg.update(hf_hub_id=entry.hub.repo_id, hf_hub_filename=entry.hub.filename)
    return cfg


def build_model(entry: ModelEntry, *, num_classes: int | None = None, **overrides: Any) -> nn.Module:
    """The architecture ``entry`` describes, randomly initialised; ``overrides`` replace ``ArchitectureConfig`` fields."""
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    unknown = sorted(set(overrides) - _ARCH_FIELDS)
    if unknown:
        raise TypeError(f"unknown architecture override(s) {', '.join(unknown)}; "
                        f"ArchitectureConfig fields are: {', '.join(sorted(_ARCH_FIELDS))}")
    arch = dataclasses.replace(entry.arch, **overrides) if overrides else entry.arch
    try:
        builder = _BUILDERS[arch.family]
    except KeyError:
        raise ValueError(f"{entry.id}: no builder for architecture family {arch.family!r} "
                         f"(known: {', '.join(sorted(_BUILDERS))})") from None
    model = builder(arch)
    model.entry = entry
    model.data_config = entry.data
    model.pretrained_cfg = pretrained_cfg(entry)
    return model


def from_index(
    model_id: str | ModelEntry,
    pretrained: bool = False,
    *,
    checkpoint_path: str | Path | None = None,
    index: IndexLike = None,
    revision: str | None = None,
    num_classes: int | None = None,
    features_only: bool = False,
    out_indices: int | tuple[int, ...] = (0, 1, 2, 3, 4),
    **overrides: Any,
) -> nn.Module:
    """Build ``model_id`` from the index; with ``pretrained`` or ``checkpoint_path``, load its weights.

    ``model_id``: an index id, or ``"hf-hub:ORG/NAME[@REV]"``: a timm Hub repo, whose ``config.json`` names the
    architecture (an index id) and gives ``num_classes`` and the preprocessing; weights from its ``model.safetensors``.
    ``index``: a ``registry.ModelIndex`` or the path of another index root (default: the packaged index).
    ``revision``: Hub revision of the weights (only with ``pretrained``).
    ``num_classes``: a different classifier size (pretrained weights then keep all but the classifier).
    ``features_only``: a backbone returning the feature maps at ``out_indices`` (timm's ``features_only``;
    ``model.feature_info`` says their channels, reductions and modules).
    ``overrides``: ``ArchitectureConfig`` fields to replace, e.g. ``drop_rate=0.3, drop_path_rate=0.1``.
    """
    if revision is not None and not pretrained:
        raise ValueError("revision selects Hub weights: pass pretrained=True with it")
    if isinstance(model_id, str) and model_id.startswith(HF_HUB_PREFIX):  # a timm repo: its config.json decides
        entry, config = entry_for_hub_repo(model_id[len(HF_HUB_PREFIX):], _index(index))
        num_classes = num_classes if num_classes is not None else config.num_classes
    else:
        entry = get_entry(model_id, index)
    model = build_model(entry, num_classes=num_classes, **overrides)
    if pretrained or checkpoint_path is not None:
        from .weights import load_pretrained  # weights pull in the Hub client: only when asked for

        load_pretrained(model, entry, checkpoint_path=checkpoint_path, revision=revision)
    if features_only:
        from .features import EfficientNetFeatures

        model = EfficientNetFeatures(model, out_indices)
    return model
