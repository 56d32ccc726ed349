"""Shared pytest setup: the helper modules beside the tests import by plain name, whatever the import mode.

Helpers: ``constants`` (model ids, anchors), ``bench_support``, ``docs_support``, ``model_oracle``, ``hub_server``;
fixtures ``count_calls`` (which code path ran) and ``two_threads``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)


@pytest.fixture(autouse=True)
def _no_flush_denormal_leak():
    """`cc-bench` run in-process calls ``cc_models.runtime.tune_cpu``, which flushes denormals for the whole
    process; later tests (hypothesis refuses to draw floats then) must see IEEE arithmetic again."""
    yield
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_flush_denormal(False)


@pytest.fixture
def count_calls(monkeypatch):
    """``count_calls(module, name, ...)`` wraps each named function of ``module`` for the test's duration and
    returns ``{name: calls so far}``: which code path a layer took, without changing what it computes."""
    counts: dict[str, int] = {}

    def wrap(module, *names: str) -> dict[str, int]:
        for name in names:
            real = getattr(module, name)
            counts[name] = 0

            def spy(*args, _real=real, _name=name, **kwargs):
                counts[_name] += 1
                return _real(*args, **kwargs)

            monkeypatch.setattr(module, name, spy)
        return counts

    return wrap


@pytest.fixture
def two_threads():
    """torch on 2 threads for the test: the CPU kernels split batch 1 within a sample, larger batches by samples."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)
