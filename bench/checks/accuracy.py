"""accuracy: top-1 / top-5 on ImageNet-1k val with the entry's eval transform vs the index Results (±0.1 pt).

Weights: the release file or a ``<model id>/`` folder in ``--checkpoint-dir``,
else the Hub through cc_models. Skipped with the reason when there is no data
(``--imagenet``), no weights (offline), or no usable device. Under torchrun the
evaluation is split across the processes (see :mod:`bench.accuracy`); rank 0
decides whether weights can be had and tells the others, so all ranks skip or
run together.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from registry import results_schema as schema

from .. import accuracy as acc
from .. import distributed, models
from .base import FAIL, PASS, CheckError, CheckResult, Context, SkipCheck

if TYPE_CHECKING:  # pragma: no cover
    from registry import ModelEntry

NAME = schema.ACCURACY
TOLERANCE_PT = 0.1
METRICS = (("top1", "Top 1 Accuracy"), ("top5", "Top 5 Accuracy"))


def template(entry: "ModelEntry", ctx: Context) -> list[CheckResult]:
    result = entry.result("ImageNet", "Image Classification")
    return [CheckResult(entry.id, NAME, metric, claimed=result.metric(name) if result else None,
                        tolerance=f"±{TOLERANCE_PT} pt", unit="%", dtype="float32", device=ctx.settings.device)
            for metric, name in METRICS]


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _weights(entry: "ModelEntry", ctx: Context):
    """Build the pretrained model: ``(model, where)``; raises SkipCheck / CheckError."""
    from cc_models.errors import OfflineError, WeightsError

    try:
        local = models.local_checkpoint(entry, ctx.settings.checkpoint_dir)
        model = models.build_pretrained(entry, ctx.index, checkpoint_path=local)
    except OfflineError as exc:
        raise SkipCheck(f"no weights: {_first_line(exc)} (or put them in --checkpoint-dir)") from None
    except WeightsError as exc:
        raise CheckError(f"{type(exc).__name__}: {_first_line(exc)}") from None
    return model, str(local) if local is not None else f"hub:{entry.hub.repo_id}" if entry.hub else "hub"


def measure(entry: "ModelEntry", ctx: Context, rows: list[CheckResult]) -> list[CheckResult]:
    s = ctx.settings
    if s.device == "cuda" and s.cuda_unavailable:
        raise SkipCheck(s.cuda_unavailable)
    if s.imagenet is None:
        raise SkipCheck("no ImageNet data: pass --imagenet DIR (val/<wnid>/*.JPEG, or images + labels CSV)")
    if all(r.claimed is None for r in rows):
        raise SkipCheck("the index gives no ImageNet Top 1/Top 5 Accuracy for this model")
    why = s.imagenet.check_classes(entry.data.num_classes)
    if why:
        raise CheckError(why)

    d = ctx.dist
    # Rank 0 obtains the weights first (a download lands in the cache once); the others follow its verdict.
    outcome = None
    model = where = None
    if d.is_main:
        try:
            model, where = _weights(entry, ctx)
            outcome = ("ok", "")
        except SkipCheck as exc:
            outcome = ("skip", exc.reason)
        except CheckError as exc:
            outcome = ("error", str(exc))
    outcome = distributed.broadcast_object(outcome, d)
    if outcome[0] == "skip":
        raise SkipCheck(outcome[1])
    if outcome[0] == "error":
        raise CheckError(outcome[1])
    failure: Exception | None = None
    if not d.is_main:
        try:
            model, where = _weights(entry, ctx)
        except (SkipCheck, CheckError) as exc:
            failure = exc
    if not distributed.all_true(failure is None, d):
        raise failure or CheckError("another process could not load the weights; see its output")

    dataset = acc.LabeledImages(s.imagenet.samples, models.eval_transform(entry, ctx.index))
    with ctx.progress.task(f"accuracy {entry.id}", total=len(dataset)) as advance:
        counts = acc.evaluate(model, dataset, batch_size=s.eval_batch_size, workers=s.workers, device=s.device,
                              dist=d, advance=advance)
    n = counts.images
    partial = "" if n == acc.IMAGENET_VAL_IMAGES else \
        f" [evaluated on {n:,} images, not the {acc.IMAGENET_VAL_IMAGES:,} of ImageNet-1k val]"
    extra = {"images": n, "processes": counts.processes, "weights": where, "dataset": s.imagenet.describe(),
             "eval_batch_size": s.eval_batch_size, "workers": s.workers}
    for row, hits in zip(rows, (counts.top1, counts.top5)):
        pct = 100.0 * hits / n if n else float("nan")
        row.measured = round(pct, 4)
        row.extra = {**extra, "correct": hits}
        if row.claimed is None:
            row.status = "info"
            row.reason = f"{pct:.3f}% ({hits:,} of {n:,}); the index gives no claim{partial}"
            continue
        diff = pct - float(row.claimed)
        row.extra["difference_pt"] = diff
        row.status = PASS if abs(diff) <= TOLERANCE_PT + 1e-9 else FAIL
        row.reason = (f"claimed {float(row.claimed):.3f}%, measured {pct:.3f}% ({hits:,} of {n:,}): "
                      f"{diff:+.3f} pt, {'within' if row.status == PASS else 'outside'} ±{TOLERANCE_PT} pt{partial}")
    return rows
