"""The index as a table (one row per model) and as plain dictionaries, for `list`, `show` and exports."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pandas as pd

from .entries import ModelEntry
from .index import ModelIndex

COLUMNS = {
    "id": "ID",
    "collection": "Collection",
    "parameters": "Params",
    "macs": "MACs",
    "image_size": "Input",
    "crop_pct": "Crop",
    "interpolation": "Interp",
    "top1": "Top-1 %",
    "top5": "Top-5 %",
    "file_size": "File bytes",
    "experts": "Experts",
    "hub_repo": "Hub repo",
}


def model_row(entry: ModelEntry) -> dict[str, Any]:
    result = entry.result()
    return {
        "id": entry.id,
        "collection": entry.collection,
        "parameters": entry.parameters,
        "macs": entry.flops,
        "image_size": entry.image_size,
        "crop_pct": entry.crop_pct,
        "interpolation": entry.interpolation,
        "top1": result.metric("Top 1 Accuracy") if result else None,
        "top5": result.metric("Top 5 Accuracy") if result else None,
        "file_size": entry.file_size,
        "experts": entry.arch.max_experts,
        "hub_repo": entry.hub.repo_id if entry.hub else None,
    }


def models_frame(index: ModelIndex) -> pd.DataFrame:
    return pd.DataFrame([model_row(m) for m in index.models], columns=list(COLUMNS))


def plain(value: Any) -> Any:
    """Dataclasses, mapping proxies and tuples as JSON-ready builtins."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "raw"}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def entry_dict(entry: ModelEntry) -> dict[str, Any]:
    """Everything about one model, resolved: typed fields plus the source location."""
    out = plain(entry)
    out["source"] = str(entry.source)
    return out
