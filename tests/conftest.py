"""Shared pytest setup: the helper modules beside the tests import by plain name, whatever the import mode.

Helpers: ``constants`` (model ids, anchors), ``bench_support``, ``docs_support``, ``model_oracle``, ``hub_server``.
"""
from __future__ import annotations

import sys
from pathlib import Path

TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
