"""Collection-level inheritance: a model takes its collection's Metadata, Data Config and Architecture Config.

Metadata is inherited as model-index's ``build_full_model`` does: the model's
value wins key by key, and a list is the collection's followed by the model's.
The two config mappings (cc-hub's own fields, which model-index would replace
whole) merge key by key too, the model's value winning, so a variant writes
only what differs from its family's base architecture: its multipliers.

A problem in an inherited value is located in the collection's file, at
that value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from .errors import Problem
from .schema import definition
from .sources import RawItem
from .yaml_io import PathKey

# Inherited field -> its $defs name (whose property order the merged mapping keeps).
INHERITED = {"Metadata": "metadata", "Data Config": "dataConfig", "Architecture Config": "architectureConfig"}


@dataclass
class ResolvedItem(RawItem):
    """A model with its collection's fields merged in; ``written`` is the model as its file writes it."""

    collection: RawItem | None = None
    written: Any = None

    def problem(self, sub: PathKey, message: str) -> Problem:
        writer, path = self.origin(tuple(sub))
        return writer.problem(path, message)

    def origin(self, sub: PathKey) -> tuple[RawItem, PathKey]:
        """The item that writes the value at ``sub``, and its path there (worked out when asked: no memory per value)."""
        model = RawItem(self.written, self.doc, self.path)
        base = self.collection.data.get(sub[0]) if sub and sub[0] in INHERITED else None
        if not isinstance(base, dict):
            return model, sub
        if sub[0] not in self.written:
            return self.collection, sub
        own = self.written[sub[0]]
        if not isinstance(own, dict):
            return model, sub
        if len(sub) > 1 and sub[1] not in own:
            return self.collection, sub
        inherited = base.get(sub[1]) if len(sub) > 2 and sub[0] == "Metadata" else None
        if isinstance(inherited, list) and isinstance(sub[2], int):  # a list the model appends to
            return (self.collection, sub) if sub[2] < len(inherited) else (model, sub[:2] + (sub[2] - len(inherited),) + sub[3:])
        return model, sub


def _in_schema_order(mapping: dict, name: str) -> dict:
    order = definition(name)["properties"]
    return {**{k: mapping[k] for k in order if k in mapping}, **{k: v for k, v in mapping.items() if k not in order}}


def _merge(model: RawItem, collection: RawItem) -> ResolvedItem:
    data: dict[str, Any] = dict(model.data)
    for key, name in INHERITED.items():
        base, own = collection.data.get(key), model.data.get(key, {})
        if not isinstance(base, dict) or not isinstance(own, dict):
            continue  # nothing to inherit, or a wrong type the schema reports
        merged = {**base, **own}
        if key == "Metadata":  # model-index appends a model's list to its collection's
            merged.update({k: v + (own[k] if isinstance(own[k], list) else [own[k]])
                           for k, v in base.items() if k in own and isinstance(v, list)})
        data[key] = _in_schema_order(merged, name)
    return ResolvedItem(_in_schema_order(data, "model"), model.doc, model.path, model.readme, collection, model.data)


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
