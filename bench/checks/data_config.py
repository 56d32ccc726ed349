"""data-config: the index's eval preprocessing vs the Hub repo's ``config.json`` (``pretrained_cfg``).

Input size, crop pct, interpolation, mean and std of the entry are compared
with what timm publishes beside the weights (``Hub: Repo``), fetched through
``huggingface_hub.hf_hub_download`` (``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, the
cache). Offline with nothing cached, or a repo without ``config.json``, the
check is skipped with the reason; a field the config does not give is skipped
alone.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from registry import results_schema as schema

from .base import FAIL, PASS, SKIP, CheckError, CheckResult, Context, SkipCheck

if TYPE_CHECKING:  # pragma: no cover
    from registry import ModelEntry

NAME = schema.DATA_CONFIG
METRICS = ("input_size", "crop_pct", "interpolation", "mean", "std")
_UNITS = {"input_size": "px"}


def _text(value: Any) -> Any:
    """How a value is shown and stored: sizes as one number when square, triples as "a, b, c"."""
    if isinstance(value, (tuple, list)):
        if len(value) == 3 and isinstance(value[0], int) and value[1] == value[2]:  # (3, H, W), square
            return value[1]
        if len(value) == 3 and isinstance(value[0], int):
            return f"{value[1]}x{value[2]}"
        return ", ".join(f"{v:g}" for v in value)
    return value


def _claims(entry: "ModelEntry") -> dict[str, Any]:
    data = entry.data
    return {"input_size": tuple(data.input_size), "crop_pct": data.crop_pct, "interpolation": data.interpolation,
            "mean": tuple(data.mean), "std": tuple(data.std)}


def _same(claimed: Any, published: Any) -> bool:
    if isinstance(claimed, tuple):
        return (isinstance(published, tuple) and len(published) == len(claimed)
                and all(_same(c, p) for c, p in zip(claimed, published)))
    if isinstance(claimed, float) or isinstance(published, float):
        return isinstance(published, (int, float)) and math.isclose(claimed, published, rel_tol=1e-9, abs_tol=1e-12)
    return claimed == published


def template(entry: "ModelEntry", ctx: Context) -> list[CheckResult]:
    claims = _claims(entry)
    return [CheckResult(entry.id, NAME, metric, claimed=_text(claims[metric]), tolerance="exact",
                        unit=_UNITS.get(metric, "")) for metric in METRICS]


def measure(entry: "ModelEntry", ctx: Context, rows: list[CheckResult]) -> list[CheckResult]:
    if entry.hub is None:
        raise SkipCheck("the index names no Hub repo whose config.json would say the preprocessing")
    from cc_models.errors import OfflineError, WeightsError, WeightsNotFoundError
    from cc_models.hub_config import fetch_hub_config

    if "hub" in ctx.unreachable:
        raise SkipCheck(f"cannot read {entry.hub.repo_id}/config.json: {ctx.unreachable['hub']} "
                        "(found unreachable earlier in this run; not tried again)")
    try:
        config = fetch_hub_config(entry.hub.repo_id, entry.hub.revision)
    except OfflineError as exc:
        ctx.unreachable["hub"] = exc.problem
        raise SkipCheck(f"cannot read {entry.hub.repo_id}/config.json: {exc.problem}") from None
    except WeightsNotFoundError as exc:
        raise SkipCheck(f"cannot read {entry.hub.repo_id}/config.json: {exc.problem}") from None
    except WeightsError as exc:
        raise CheckError(exc.problem) from None
    published, claims = config.data(), _claims(entry)
    source = f"{entry.hub.repo_id}/config.json"
    for row in rows:
        value = published.get(row.metric)
        if value is None:
            row.status, row.reason = SKIP, f"{source} gives no pretrained_cfg.{row.metric}"
            continue
        row.measured = _text(value)
        row.extra = {"source": source, "published": list(value) if isinstance(value, tuple) else value}
        if _same(claims[row.metric], value):
            row.status, row.reason = PASS, f"{source}: {row.measured}"
        else:
            row.status, row.reason = FAIL, f"the index says {row.claimed}, {source} says {row.measured}"
    return rows
