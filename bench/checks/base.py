"""What every check shares: the result row, the run context, and how a check is written.

A check module defines ``NAME``, ``template(entry, ctx)`` (the rows it will
produce, with the claims filled in and no measurement) and
``measure(entry, ctx, rows)`` (fills the rows). The runner calls them; when
``measure`` raises :class:`SkipCheck` every row becomes a ``skip`` with its
reason, any other exception makes every row an ``error`` -- a check that cannot
run is never silently passed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from registry.results_schema import ERROR, FAIL, FAILING, INFO, PASS, REGRESSION, SKIP  # noqa: F401 (re-exported)

from ..distributed import SINGLE, Dist
from ..progress import QUIET, Progress

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from registry import ModelEntry, ModelIndex

    from ..accuracy import ImageSet


@dataclass
class CheckResult:
    """One row: a claim of the index (if any), what was measured, and the verdict."""

    model_id: str
    check: str
    metric: str
    claimed: float | int | None = None
    measured: float | int | None = None
    tolerance: str = ""
    unit: str = ""
    status: str = ""
    reason: str = ""
    device: str = ""
    device_name: str = ""
    fingerprint: str = ""
    dtype: str = ""
    threads: int | None = None
    allocator: str = ""
    torch_version: str = ""
    batch_size: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SkipCheck(Exception):
    """The check cannot run here (no data, no weights, offline, no GPU, missing dependency)."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class CheckError(Exception):
    """The check ran and broke (bad data, unloadable weights): ``error`` rows with this message."""


@dataclass
class Settings:
    """The options of one ``cc-bench run`` that checks read."""

    device: str = "cpu"  # resolved: "cpu" or "cuda"
    cuda_unavailable: str | None = None  # why a requested CUDA device cannot be used
    imagenet: "ImageSet | None" = None
    checkpoint_dir: Path | None = None
    batch_sizes: tuple[int, ...] = (1, 32)
    eval_batch_size: int = 32
    workers: int = 0
    warmup: int = 1
    repeats: int = 3
    budget_s: float = 5.0
    min_time_s: float = 0.0  # throughput: keep timing until this much has run (bench.throughput.measure)


@dataclass
class Context:
    """A run's settings, index, history and shared caches, handed to every check."""

    index: "ModelIndex"
    settings: Settings
    env: dict[str, Any]
    history: list[dict[str, Any]] | None = None  # earlier rows of the store (bench.store.history), for regressions
    progress: Progress = QUIET
    dist: Dist = SINGLE
    build_model: Callable[["ModelEntry", "ModelIndex"], "nn.Module"] | None = None
    _models: dict[str, "nn.Module"] = field(default_factory=dict)
    # Hosts found unreachable in this run (name -> why): later checks skip at once instead of paying
    # huggingface_hub's retries again for every model.
    unreachable: dict[str, str] = field(default_factory=dict)

    def model(self, entry: "ModelEntry") -> "nn.Module":
        """The entry's architecture (random weights, fp32, eval, CPU), built once per run through cc_models."""
        if entry.id not in self._models:
            from .. import models

            build = self.build_model or models.build
            self._models[entry.id] = build(entry, self.index)
        return self._models[entry.id]

    def release_models(self) -> None:
        self._models.clear()


def fmt_int(value: float | int | None) -> str:
    return "-" if value is None else f"{int(round(value)):,}"
