"""throughput: images/s at each batch size (informational; the index claims no speed).

A row is ``info``, or ``regression`` when it is more than 10% below the latest
earlier stored run of the same model on the same machine (the same device
fingerprint: CPU/GPU, cores, ISA flags, allocator, torch build; see ``bench.env``),
dtype, thread count and batch size. A run recorded without a fingerprint is never
compared against. Figures drift between runs on shared machines;
only ratios measured side by side are comparable, so a regression is reported,
not failed.

On CPU the run also times a host reference beside the model (``bench.throughput.
host_reference``), and where both runs have the same reference the comparison is
of the ratio model / reference: a host that slowed by 25% for a while (seen here)
then reads as the host, not as a regression, and code that got slower on a host
that got faster is still caught. The row's reason gives both changes.
"""
from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from registry import results_schema as schema

from .. import throughput as timing
from .base import INFO, REGRESSION, CheckResult, Context, SkipCheck

if TYPE_CHECKING:  # pragma: no cover
    from registry import ModelEntry

NAME = schema.THROUGHPUT
METRIC = "images_per_s"
REGRESSION_DROP = 0.10


def template(entry: "ModelEntry", ctx: Context) -> list[CheckResult]:
    s = ctx.settings
    return [CheckResult(entry.id, NAME, METRIC, tolerance=f"-{REGRESSION_DROP:.0%} vs previous run", unit="img/s",
                        batch_size=bs, device=s.device, dtype=dtype)
            for dtype in timing.dtypes_for(s.device) for bs in s.batch_sizes]


def previous(history: list[dict[str, Any]] | None, row: CheckResult, env: dict[str, Any]) -> dict[str, Any] | None:
    """The latest earlier measurement of the same model and batch size, on the same fingerprint, dtype and threads."""
    fingerprint = env.get("fingerprint_id")
    if not history or not fingerprint:
        return None
    same = [h for h in history
            if (h["model_id"], h["check"], h["metric"], h["batch_size"], h["device"], h["fingerprint"], h["dtype"],
                h["threads"]) == (row.model_id, NAME, METRIC, row.batch_size, row.device, fingerprint, row.dtype,
                                  env.get("threads"))
            and h["status"] in (INFO, REGRESSION) and h["measured"] is not None]
    if not same:
        return None
    last = schema.chronological(same)[-1]
    found = {"run_id": str(last["run_id"]), "images_per_s": float(last["measured"]),
             "torch_version": str(last["torch_version"])}
    extra = _extra(last)
    if isinstance(extra.get("reference"), str) and isinstance(extra.get("reference_images_per_s"), (int, float)):
        found["reference"] = extra["reference"]
        found["reference_images_per_s"] = float(extra["reference_images_per_s"])
    return found


def _extra(row: dict[str, Any]) -> dict[str, Any]:
    extra = row.get("extra")
    if isinstance(extra, str):
        try:
            extra = json.loads(extra) if extra.strip() else {}
        except ValueError:
            return {}
    return extra if isinstance(extra, dict) else {}


def judge(images_per_s: float, reference_images_per_s: float | None, reference: str | None,
          prev: dict[str, Any]) -> tuple[bool, dict[str, float], str]:
    """Whether this figure is a regression against ``prev`` (from :func:`previous`), the changes behind the
    verdict, and how they were compared. Against the same host reference the ratio to it is compared; otherwise
    the figures themselves."""
    change = images_per_s / prev["images_per_s"] - 1 if prev["images_per_s"] else math.inf
    changes = {"change": change}
    if reference and reference_images_per_s and prev.get("reference") == reference \
            and prev.get("reference_images_per_s"):
        host = reference_images_per_s / prev["reference_images_per_s"] - 1
        # the ratio of ratios, not (1 + change) / (1 + host): a host change near -100% rounds 1 + host to 0
        before = prev["images_per_s"] / prev["reference_images_per_s"]
        relative = (images_per_s / reference_images_per_s) / before - 1 if before else math.inf
        changes.update(host_change=host, relative_change=relative)
        return relative < -REGRESSION_DROP, changes, (
            f"{relative:+.1%} relative to the host reference timed beside it ({change:+.1%} in images/s, the "
            f"reference {host:+.1%})")
    why = "no host reference then" if reference else "no host reference timed"
    return change < -REGRESSION_DROP, changes, f"{change:+.1%} ({why})"


def measure(entry: "ModelEntry", ctx: Context, rows: list[CheckResult]) -> list[CheckResult]:
    s = ctx.settings
    if s.device == "cuda" and s.cuda_unavailable:
        raise SkipCheck(s.cuda_unavailable)
    # prepare() times a fused copy, so the shared model stays as built for the other checks
    model = timing.prepare(ctx.model(entry), s.device)
    reference = timing.host_reference() if s.device == "cpu" else None
    runs = len(rows) * (s.warmup + s.repeats)
    with ctx.progress.task(f"throughput {entry.id}", total=runs) as advance:
        for row in rows:
            t = timing.measure(model, entry.data.input_size, row.batch_size, device=s.device, dtype=row.dtype,
                               warmup=s.warmup, repeats=s.repeats, budget_s=s.budget_s, min_time_s=s.min_time_s,
                               advance=advance, reference=reference)
            row.measured = round(t.images_per_s, 3)
            row.threads = ctx.env.get("threads")
            row.extra = {**t.to_extra(), "input_size": list(entry.data.input_size), "fused": True}
            how = f"median of {len(t.times_s)} runs after {t.warmup} warm-up, {t.dtype}" + \
                (f", CUDA graph, peak {t.peak_memory_mib:.0f} MiB allocated" if t.cuda_graph else "") + \
                (f"; host reference {t.reference_images_per_s:.2f} img/s" if t.reference else "")
            prev = previous(ctx.history, row, ctx.env)
            if prev is None:
                row.status = INFO
                row.reason = f"{t.images_per_s:.2f} img/s ({how}); no earlier run on this device and settings"
                continue
            slower, changes, compared = judge(t.images_per_s, t.reference_images_per_s, t.reference, prev)
            row.extra["previous"] = {**prev, **changes}
            torch_note = "" if prev["torch_version"] == ctx.env.get("torch_version") else \
                f"; torch {prev['torch_version']} then"
            row.status = REGRESSION if slower else INFO
            row.reason = (f"{t.images_per_s:.2f} img/s ({how}); "
                          f"{'regression against' if slower else 'against'} the previous run {prev['run_id']} on "
                          f"the same device and settings ({prev['images_per_s']:.2f} img/s{torch_note}): "
                          f"{compared}")
    if s.device == "cuda":
        del model
        import torch

        torch.cuda.empty_cache()
    return rows
