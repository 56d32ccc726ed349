"""The ``<!-- Type: model-index ... -->`` block of a rendered collection page.

It is regenerated from the entries as written in the index (their ``raw``
mappings, so string forms such as ``'0.875'`` survive), indented the way
``model_index/models/*.yml`` are, and loads back into equal entries. A value
holding ``-->`` (or ``--!>``) would close the HTML comment early; such strings
are written double-quoted with ``>`` as the YAML escape ``\\x3E``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterable

import yaml

from ..entries import CollectionEntry, ModelEntry

_GT = "\ue000"  # stands for ">" inside double-quoted scalars until the final replace


class DocsBlockError(ValueError):
    pass


class _BlockDumper(yaml.SafeDumper):
    """Block style, sequences indented under their key (``  - Name:``) as in the index files."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if _GT in value:
        raise DocsBlockError("index strings may not contain U+E000")
    if "--" in value and ">" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value.replace(">", _GT), style='"')
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_BlockDumper.add_representer(str, _represent_str)


def plain_data(value: Any) -> Any:
    """Frozen raw index data (mapping proxies, tuples) as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {k: plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    return value


def collection_raw(collection: CollectionEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"Name": collection.name}
    if collection.paper is not None:
        out["Paper"] = {"Title": collection.paper.title, "URL": collection.paper.url}
    if collection.citation is not None:
        out["Citation"] = collection.citation
    return out


def model_index_block(collections: Iterable[CollectionEntry], models: Iterable[ModelEntry]) -> str:
    data: dict[str, Any] = {"Type": "model-index"}
    collections = [collection_raw(c) for c in collections]
    models = [plain_data(m.raw) for m in models]
    if collections:
        data["Collections"] = collections
    if models:
        data["Models"] = models
    text = yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=4096, indent=2)
    text = text.replace(_GT, "\\x3E")
    assert "-->" not in text and "--!>" not in text
    return f"<!--\n{text}-->\n"
