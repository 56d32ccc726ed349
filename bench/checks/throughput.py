"""throughput: images/s at each batch size (informational; the index claims no speed).

A row is ``info``, or ``regression`` when it is more than 10% below the latest
earlier stored run of the same model on the same machine (the same device
fingerprint: CPU/GPU, cores, ISA flags, allocator, torch build; see ``bench.env``),
dtype, thread count and batch size. A run recorded without a fingerprint is never
compared against. Figures drift between runs on shared machines;
only ratios measured side by side are comparable, so a regression is reported,
not failed.
"""
from __future__ import annotations

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
    return {"run_id": str(last["run_id"]), "images_per_s": float(last["measured"]),
            "torch_version": str(last["torch_version"])}


def measure(entry: "ModelEntry", ctx: Context, rows: list[CheckResult]) -> list[CheckResult]:
    s = ctx.settings
    if s.device == "cuda" and s.cuda_unavailable:
        raise SkipCheck(s.cuda_unavailable)
    # prepare() times a fused copy, so the shared model stays as built for the other checks
    model = timing.prepare(ctx.model(entry), s.device)
    runs = len(rows) * (s.warmup + s.repeats)
    with ctx.progress.task(f"throughput {entry.id}", total=runs) as advance:
        for row in rows:
            t = timing.measure(model, entry.data.input_size, row.batch_size, device=s.device, dtype=row.dtype,
                               warmup=s.warmup, repeats=s.repeats, budget_s=s.budget_s, min_time_s=s.min_time_s,
                               advance=advance)
            row.measured = round(t.images_per_s, 3)
            row.threads = ctx.env.get("threads")
            row.extra = {**t.to_extra(), "input_size": list(entry.data.input_size), "fused": True}
            how = f"median of {len(t.times_s)} runs after {t.warmup} warm-up, {t.dtype}" + \
                (f", CUDA graph, peak {t.peak_memory_mib:.0f} MiB allocated" if t.cuda_graph else "")
            prev = previous(ctx.history, row, ctx.env)
            if prev is None:
                row.status = INFO
                row.reason = f"{t.images_per_s:.2f} img/s ({how}); no earlier run on this device and settings"
                continue
            change = t.images_per_s / prev["images_per_s"] - 1 if prev["images_per_s"] else math.inf
            row.extra["previous"] = {**prev, "change": change}
            torch_note = "" if prev["torch_version"] == ctx.env.get("torch_version") else \
                f", torch {prev['torch_version']} then"
            if change < -REGRESSION_DROP:
                row.status = REGRESSION
                row.reason = (f"{t.images_per_s:.2f} img/s is {-change:.1%} below the previous run "
                              f"{prev['run_id']} ({prev['images_per_s']:.2f} img/s{torch_note}) on the same device "
                              f"and settings ({how})")
            else:
                row.status = INFO
                row.reason = (f"{t.images_per_s:.2f} img/s ({how}); previous run {prev['run_id']}: "
                              f"{prev['images_per_s']:.2f} img/s ({change:+.1%}{torch_note})")
    if s.device == "cuda":
        del model
        import torch

        torch.cuda.empty_cache()
    return rows
