"""Checks the schema cannot express: cross-file references, ranges of string-form numbers, consistency."""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable

from .build import to_int, to_number
from .entries import RELEASE_NAME_RE
from .errors import Problem
from .schema import definition
from .sources import RawItem

FLOAT32_BYTES = 4
# A float32 checkpoint is parameters x 4 bytes plus BatchNorm buffers and container overhead.
FILE_SIZE_TOLERANCE = 0.03
EXPERTS_IN_NAME = re.compile(r"_(\d+)e$")


def _get(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


def _number(value: Any, convert: Callable = to_number):
    """The value as a number, or None (the schema already reported a malformed one)."""
    if value is None:
        return None
    try:
        return convert(value)
    except (TypeError, ValueError):
        return None


def _check_range(item, where, value, problems, *, low=None, high=None, low_open=False, what="value", unit=""):
    number = _number(value)
    if number is None:
        return
    bad_low = low is not None and (number <= low if low_open else number < low)
    bad_high = high is not None and number > high
    if bad_low or bad_high:
        lo = "(" if low_open else "["
        rng = f"{lo}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        problems.append(item.problem(where, f"{what} {value!r} is out of range {rng}{unit}"))


def _check_https(item: RawItem, where: tuple, url: Any, problems: list[Problem]) -> None:
    if isinstance(url, str) and not url.startswith("https://"):
        problems.append(item.problem(where, f"URL must use https, got {url!r}"))


def check_model(item: RawItem) -> list[Problem]:
    raw, problems = item.data, []
    if not isinstance(raw, dict):
        return problems
    name = raw.get("Name")
    for where in (("ID",), ("Metadata", "ID")):
        model_id = _get(raw, *where)
        if model_id is not None and model_id != name:
            problems.append(item.problem(where, f"ID {model_id!r} must equal Name {name!r}"))

    meta = raw.get("Metadata") if isinstance(raw.get("Metadata"), dict) else {}
    _check_range(item, ("Metadata", "Crop Pct"), meta.get("Crop Pct"), problems, low=0, high=1, low_open=True, what="Crop Pct")
    for key in ("Image Size", "FLOPs", "Parameters", "File Size", "Epochs", "Batch Size"):
        _check_range(item, ("Metadata", key), meta.get(key), problems, low=0, low_open=True, what=key)
    for key in ("Momentum", "RMSProp Decay", "Label Smoothing", "BatchNorm Momentum"):
        _check_range(item, ("Metadata", key), meta.get(key), problems, low=0, high=1, what=key)
    for key in ("LR", "Weight Decay"):
        _check_range(item, ("Metadata", key), meta.get(key), problems, low=0, what=key)

    for i, result in enumerate(raw.get("Results") or []):
        metrics = _get(result, "Metrics") or {}
        if isinstance(metrics, dict):
            for metric, value in metrics.items():
                if "accuracy" in str(metric).lower():
                    _check_range(item, ("Results", i, "Metrics", metric), value, problems, low=0, high=100,
                                 what=str(metric), unit=" (percent)")

    for where in (("Code",), ("Weights",), ("Paper", "URL")):
        _check_https(item, where, _get(raw, *where), problems)
    for i, erratum in enumerate(raw.get("Errata") or []):
        _check_https(item, ("Errata", i, "Source"), _get(erratum, "Source"), problems)
        field = _get(erratum, "Field")
        if isinstance(field, str) and _get(raw, *field.split(".")) is None:
            problems.append(item.problem(("Errata", i, "Field"), f"erratum names field {field!r}, which this model does not have"))

    weights = raw.get("Weights")
    if isinstance(weights, str):
        filename = weights.rsplit("/", 1)[-1]
        if not RELEASE_NAME_RE.match(filename):
            problems.append(item.problem(("Weights",), f"release file name {filename!r} must carry the first 8 hex "
                                         "digits of its SHA-256, as in 'name-4362b6b2.pth'"))

    params = _number(meta.get("Parameters"), to_int)
    size = _number(meta.get("File Size"), to_int)
    if params and size and params > 0:
        expected = params * FLOAT32_BYTES
        if abs(size - expected) / expected > FILE_SIZE_TOLERANCE:
            problems.append(item.problem(
                ("Metadata", "File Size"),
                f"File Size {size:,} bytes disagrees with Parameters {params:,}: a float32 checkpoint holds about "
                f"{expected:,} bytes (allowed {FILE_SIZE_TOLERANCE:.0%} apart, found {abs(size - expected) / expected:.1%})"))

    data = raw.get("Data Config") if isinstance(raw.get("Data Config"), dict) else {}
    for i, value in enumerate(data.get("Std") or []):
        _check_range(item, ("Data Config", "Std", i), value, problems, low=0, low_open=True, what="Std")
    for i, value in enumerate(data.get("Mean") or []):
        _check_range(item, ("Data Config", "Mean", i), value, problems, low=0, high=1, what="Mean")
    _check_range(item, ("Data Config", "Num Classes"), data.get("Num Classes"), problems, low=0, low_open=True, what="Num Classes")

    arch = raw.get("Architecture Config") if isinstance(raw.get("Architecture Config"), dict) else {}
    stages = arch.get("Stages") if isinstance(arch.get("Stages"), list) else []
    for i, stage in enumerate(stages):
        kernel = _get(stage, "Kernel")
        if isinstance(kernel, int) and kernel % 2 == 0:
            problems.append(item.problem(("Architecture Config", "Stages", i, "Kernel"), f"kernel size {kernel} must be odd"))
    match = EXPERTS_IN_NAME.search(str(name or ""))
    if match and stages:
        multiplier = arch.get("Experts Multiplier", definition("architectureConfig")["properties"]["Experts Multiplier"]["default"])
        no_experts = definition("stage")["properties"]["Experts"]["default"]
        experts = [s.get("Experts", no_experts) for s in stages if isinstance(s, dict)]
        base = max((e for e in experts if isinstance(e, int)), default=no_experts)  # the schema reports other types
        if isinstance(multiplier, int) and isinstance(base, int) and base * multiplier != int(match[1]):
            problems.append(item.problem(
                ("Architecture Config", "Experts Multiplier"),
                f"name {name!r} says {match[1]} experts, but the config gives {base} base experts x "
                f"Experts Multiplier {multiplier} = {base * multiplier}"))
    return problems


def check_collection(item: RawItem) -> list[Problem]:
    problems: list[Problem] = []
    if isinstance(item.data, dict):
        _check_https(item, ("Paper", "URL"), _get(item.data, "Paper", "URL"), problems)
    return problems


def check_index(models: Iterable[RawItem], collections: Iterable[RawItem]) -> list[Problem]:
    """Cross-item checks: unique names, collections that exist; plus each item's own checks."""
    models, collections = list(models), list(collections)
    problems: list[Problem] = []
    seen: dict[str, RawItem] = {}
    for item in collections:
        problems.extend(check_collection(item))
        name = _get(item.data, "Name")
        if isinstance(name, str):
            if name in seen:
                first = seen[name]
                line, _ = first.doc.locate(first.path)
                problems.append(item.problem(("Name",), f"collection {name!r} is defined twice (also at {first.doc.file}:{line})"))
            seen[name] = item
    collection_names = set(seen)
    seen_models: dict[str, RawItem] = {}
    for item in models:
        problems.extend(check_model(item))
        name = _get(item.data, "Name")
        if not isinstance(name, str):
            continue
        if name in seen_models:
            first = seen_models[name]
            line, _ = first.doc.locate(first.path + ("Name",))
            problems.append(item.problem(("Name",), f"model {name!r} is defined twice (first at {first.doc.file}:{line}); "
                                                    "names must be unique across all files"))
        else:
            seen_models[name] = item
        collection = _get(item.data, "In Collection")
        if isinstance(collection, str) and collection not in collection_names:
            known = ", ".join(repr(c) for c in sorted(collection_names)) or "none defined"
            problems.append(item.problem(("In Collection",), f"unknown collection {collection!r} (collections: {known})"))
    return problems
