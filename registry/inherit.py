"""Collection-level inheritance: a model takes its collection's Metadata, Data Config and Architecture Config.

Metadata is inherited as model-index's ``build_full_model`` does: the model's
value wins key by key, and a list is the collection's followed by the model's.
The two config mappings (cc-hub's own fields, which model-index would replace
whole) merge key by key too, the model's value winning, so a variant writes
only what differs from its family's base architecture: its multipliers.

Every inherited value remembers where it is written, so a problem in it is
located in the collection's file, at that value.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from .errors import Problem
from .schema import definition
from .sources import RawItem
from .yaml_io import PathKey

# Inherited field -> its $defs name (whose property order the merged mapping keeps).
INHERITED = {"Metadata": "metadata", "Data Config": "dataConfig", "Architecture Config": "architectureConfig"}


@dataclass
class ResolvedItem(RawItem):
    """A model with its collection's fields merged in; ``origins`` maps a path to the item that wrote it."""

    collection: RawItem | None = None
    origins: dict[PathKey, tuple[RawItem, PathKey]] = field(default_factory=dict)

    def problem(self, sub: PathKey, message: str) -> Problem:
        sub = tuple(sub)
        for cut in range(len(sub), 0, -1):
            if sub[:cut] in self.origins:
                writer, path = self.origins[sub[:cut]]
                return writer.problem(path + sub[cut:], message)
        return super().problem(sub, message)


def _in_schema_order(mapping: dict, name: str) -> dict:
    order = definition(name)["properties"]
    return {**{k: mapping[k] for k in order if k in mapping}, **{k: v for k, v in mapping.items() if k not in order}}


def _merge(model: RawItem, collection: RawItem) -> ResolvedItem:
    data: dict[str, Any] = dict(model.data)
    origins: dict[PathKey, tuple[RawItem, PathKey]] = {}
    for key, name in INHERITED.items():
        base, own = collection.data.get(key), model.data.get(key, {})
        if not isinstance(base, dict) or not isinstance(own, dict):
            continue  # nothing to inherit, or a wrong type the schema reports
        merged = dict(own)
        for sub, value in base.items():
            if sub not in own:
                merged[sub] = value
                origins[(key, sub)] = (collection, (key, sub))
            elif key == "Metadata" and isinstance(value, list):  # model-index appends to the collection's list
                mine = own[sub] if isinstance(own[sub], list) else [own[sub]]
                merged[sub] = value + mine
                origins.update({(key, sub, i): (collection, (key, sub, i)) for i in range(len(value))})
                origins.update({(key, sub, len(value) + i): (model, (key, sub, i)) for i in range(len(mine))})
        if key not in model.data:
            origins[(key,)] = (collection, (key,))
        data[key] = _in_schema_order(merged, name)
    return ResolvedItem(_in_schema_order(data, "model"), model.doc, model.path, model.readme, collection, origins)


def inherit(models: Iterable[RawItem], collections: Iterable[RawItem]) -> list[RawItem]:
    """Each model resolved against the collection it names (the first one of that name); others as written."""
    by_name: dict[str, RawItem] = {}
    for item in collections:
        if isinstance(item.data, dict) and isinstance(item.data.get("Name"), str):
            by_name.setdefault(item.data["Name"], item)
    out = []
    for item in models:
        name = item.data.get("In Collection") if isinstance(item.data, dict) else None
        collection = by_name.get(name) if isinstance(name, str) else None
        out.append(_merge(item, collection) if collection else item)
    return out
