"""params: the parameter count of the model cc_models builds vs the index's ``Parameters``.

The index publishes parameters rounded to 10k (13,310,000 for 13,314,116), so a
claim that is a multiple of 10,000 passes when the exact count rounds to it
(within +-5,000); any other claim must be exact. Buffers (batch-norm running
statistics) are not parameters.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from registry import results_schema as schema

from .base import FAIL, PASS, CheckResult, Context, fmt_int

if TYPE_CHECKING:  # pragma: no cover
    from registry import ModelEntry

NAME = schema.PARAMS
ROUNDING = 10_000


def half_unit(claimed: int) -> int:
    """The tolerance implied by the claim's rounding: 5,000 for a multiple of 10k, else 0."""
    return ROUNDING // 2 if claimed % ROUNDING == 0 else 0


def template(entry: "ModelEntry", ctx: Context) -> list[CheckResult]:
    tol = half_unit(entry.parameters)
    tolerance = f"±{tol:,} (rounded to 10k)" if tol else "exact"
    return [CheckResult(entry.id, NAME, "parameters", claimed=entry.parameters, tolerance=tolerance,
                        unit="parameters", device="cpu", dtype="float32")]


def measure(entry: "ModelEntry", ctx: Context, rows: list[CheckResult]) -> list[CheckResult]:
    (row,) = rows
    model = ctx.model(entry)
    count = sum(p.numel() for p in model.parameters())
    claimed = int(row.claimed)
    diff = count - claimed
    tol = half_unit(claimed)
    row.measured = count
    row.status = PASS if abs(diff) <= tol else FAIL
    row.extra = {"difference": diff, "tolerance_abs": tol}
    if row.status == PASS:
        row.reason = f"{fmt_int(count)} parameters, {diff:+,} from the claim"
    else:
        row.reason = (f"claimed {fmt_int(claimed)}, measured {fmt_int(count)} parameters: off by {diff:+,} "
                      f"(tolerance ±{tol:,})")
    return rows
