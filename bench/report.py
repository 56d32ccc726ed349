"""Turn a run's check results into the printed table, the notes, the verdict, and the JSON report."""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Iterable, Sequence

import pandas as pd

from registry.results_schema import STATUSES as STATUS_ORDER

from .checks.base import FAIL, FAILING, PASS, REGRESSION, CheckResult

_INT_UNITS = {"parameters", "bytes", "MACs", "FLOPs (2/MAC)"}


def fmt_value(value: Any, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit in _INT_UNITS:
        return f"{int(round(float(value))):,}"
    if unit == "%":
        return f"{float(value):.3f}"
    if unit == "img/s":
        return f"{float(value):.2f}"
    return str(value)


def table(results: Sequence[CheckResult]) -> pd.DataFrame:
    """One row per model x check x metric (x batch size), formatted for reading."""
    rows = [{
        "model": r.model_id,
        "check": r.check,
        "metric": r.metric,
        "batch": "" if r.batch_size is None else str(r.batch_size),
        "claimed": fmt_value(r.claimed, r.unit),
        "measured": fmt_value(r.measured, r.unit),
        "unit": r.unit,
        "tolerance": r.tolerance,
        "status": r.status.upper() if r.status in FAILING or r.status == REGRESSION else r.status,
    } for r in results]
    return pd.DataFrame(rows, columns=["model", "check", "metric", "batch", "claimed", "measured", "unit",
                                       "tolerance", "status"])


def counts(results: Iterable[CheckResult]) -> dict[str, int]:
    c = Counter(r.status for r in results)
    return {s: c.get(s, 0) for s in STATUS_ORDER}


def ok(results: Iterable[CheckResult]) -> bool:
    return not any(r.status in FAILING for r in results)


def verdict_line(results: Sequence[CheckResult], run_id: str | None = None) -> str:
    c = counts(results)
    parts = [f"{c[s]} {s}" for s in STATUS_ORDER if c[s] or s in (PASS, FAIL)]
    head = "PASS" if ok(results) else "FAIL"
    failed = sorted({f"{r.model_id}:{r.check}" for r in results if r.status in FAILING})
    detail = f" ({', '.join(failed[:6])}{', ...' if len(failed) > 6 else ''})" if failed else ""
    regressions = sorted({f"{r.model_id}@{r.batch_size}" for r in results if r.status == REGRESSION})
    reg = f"; throughput regression: {', '.join(regressions)}" if regressions else ""
    run = f" [run {run_id}]" if run_id else ""
    return f"verdict: {head}: {', '.join(parts)}{detail}{reg}{run}"


def notes(results: Sequence[CheckResult]) -> list[str]:
    out = []
    for r in results:
        if r.reason:
            bs = f"@{r.batch_size}" if r.batch_size is not None else ""
            out.append(f"{r.status:10s} {r.model_id} {r.check}/{r.metric}{bs}: {r.reason}")
    return out


def text(results: Sequence[CheckResult], run_id: str | None = None, extra_lines: Sequence[str] = ()) -> str:
    lines = []
    if results:
        lines.append(table(results).to_string(index=False))
    else:
        lines.append("(no checks ran)")
    n = notes(results)
    if n:
        lines += ["", "notes:"] + [f"  {line}" for line in n]
    lines += list(extra_lines)
    lines.append(verdict_line(results, run_id))
    return "\n".join(lines)


def json_report(results: Sequence[CheckResult], **fields: Any) -> dict[str, Any]:
    return {
        **fields,
        "ok": ok(results),
        "verdict": verdict_line(results, fields.get("run_id")),
        "counts": counts(results),
        "results": [r.to_dict() for r in results],
    }
