"""Shared pytest setup: the helper modules beside the tests import by plain name, whatever the import mode.

Helpers: ``constants`` (model ids, anchors), ``bench_support``, ``docs_support``, ``model_oracle``, ``hub_server``.
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
