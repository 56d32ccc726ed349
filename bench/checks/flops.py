"""flops: fvcore multiply-adds at the entry's image size, batch 1, vs the index's ``FLOPs`` (within 1%).

Two rows per model:

* ``macs`` -- fvcore's count (the index's convention) against the claim; the
  ops fvcore skipped are listed in the row, and the entry's erratum (the
  published figure the index corrects) is shown beside it with its ratio.
* ``flop_counter_flops`` -- the cross-check by ``torch.utils.flop_counter``,
  which counts **2 FLOPs per multiply-add** and only convolutions and matrix
  products. Its claim is 2x the index figure; it is ``info`` while
  ``flop_counter / 2`` is within 5% of fvcore (fvcore also counts batch norm and
  pooling: about 3% on these models), and ``fail`` beyond that, since one of
  the counters then missed part of the network.

The model is the one cc_models builds: unfused, fp32, eval, on the CPU.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from registry import results_schema as schema

from .. import flops as counting
from .base import FAIL, INFO, PASS, SKIP, CheckResult, Context, fmt_int

if TYPE_CHECKING:  # pragma: no cover
    from registry import ModelEntry

NAME = schema.FLOPS
TOLERANCE = 0.01
CROSS_CHECK_TOLERANCE = 0.05


def template(entry: "ModelEntry", ctx: Context) -> list[CheckResult]:
    common = dict(device="cpu", dtype="float32", batch_size=None)
    return [
        CheckResult(entry.id, NAME, "macs", claimed=entry.flops, tolerance="±1%", unit="MACs", **common),
        CheckResult(entry.id, NAME, "flop_counter_flops", claimed=2 * entry.flops,
                    tolerance=f"±{CROSS_CHECK_TOLERANCE:.0%} of 2x fvcore", unit="FLOPs (2/MAC)", **common),
    ]


def _skipped(ops: dict[str, int]) -> str:
    return ", ".join(f"{op} x{n}" for op, n in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"


def measure(entry: "ModelEntry", ctx: Context, rows: list[CheckResult]) -> list[CheckResult]:
    macs_row, fc_row = rows
    model = ctx.model(entry)
    inputs = counting.example_input(entry.data.input_size, 1)
    shape = list(inputs.shape)
    erratum = entry.erratum("Metadata.FLOPs")

    fv = None
    try:
        with warnings.catch_warnings():  # fvcore's import uses the deprecated torch.jit.script
            warnings.simplefilter("ignore")
            import fvcore.nn  # noqa: F401
    except ImportError:
        macs_row.status = SKIP
        macs_row.reason = "fvcore is not installed (pip install fvcore)"
    else:
        fv = counting.fvcore_count(model, inputs)
        claimed = int(macs_row.claimed)
        ratio = fv.macs / claimed if claimed else float("inf")
        macs_row.measured = fv.macs
        macs_row.status = PASS if abs(ratio - 1) <= TOLERANCE else FAIL
        macs_row.extra = {
            "ratio": ratio,
            "input_shape": shape,
            "fvcore_skipped_ops": fv.skipped_ops,
            "fvcore_by_operator": fv.by_operator,
            "fvcore_uncalled_modules": fv.uncalled_modules,
        }
        verdict = "within" if macs_row.status == PASS else "outside"
        macs_row.reason = (f"claimed {fmt_int(claimed)}, measured {fmt_int(fv.macs)} multiply-adds (fvcore, "
                           f"{'x'.join(map(str, shape))}): ratio {ratio:.4f}, {verdict} ±{TOLERANCE:.0%}")
        if erratum is not None and isinstance(erratum.published, (int, float)) and erratum.published:
            e_ratio = fv.macs / erratum.published
            macs_row.extra["erratum"] = {"published": erratum.published, "ratio": e_ratio, "reason": erratum.reason,
                                         "source": erratum.source}
            macs_row.reason += f"; erratum: published {fmt_int(erratum.published)} (measured/published {e_ratio:.3f})"
        macs_row.reason += f"; fvcore skipped ops (not counted): {_skipped(fv.skipped_ops)}"

    fc = counting.flop_counter_count(model, inputs)
    fc_row.measured = fc.flops
    fc_row.extra = {"convention": "2 FLOPs per multiply-add", "macs": fc.macs, "by_operator": fc.by_operator,
                    "input_shape": shape}
    basis = f"torch.utils.flop_counter: {fmt_int(fc.flops)} FLOPs = {fmt_int(fc.macs)} multiply-adds (2 FLOPs each)"
    if fv is not None and fv.macs:
        cross = fc.macs / fv.macs
        fc_row.extra["ratio_to_fvcore"] = cross
        fc_row.status = INFO if abs(cross - 1) <= CROSS_CHECK_TOLERANCE else FAIL
        fc_row.reason = (f"{basis}, {cross:.3f}x fvcore (it counts convolutions and matrix products only, "
                         f"not batch norm or pooling)")
        if fc_row.status == FAIL:
            fc_row.reason += f": the counters disagree by more than {CROSS_CHECK_TOLERANCE:.0%}"
    else:
        fc_row.status = INFO
        fc_row.reason = basis
    return rows
