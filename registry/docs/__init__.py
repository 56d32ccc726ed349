"""Docs pages and model cards rendered from the index and the bench's results store.

>>> from registry.docs import render_docs
>>> render_docs(results_dir="results", out_dir="docs")   # the packaged index   # doctest: +SKIP
"""
from __future__ import annotations

from .cli import cli_docs, cli_export
from .hf_card import card_data, export_hf_card, render_card
from .render import (
    GENERATED_MARKER,
    CheckReport,
    DocsError,
    RenderedFile,
    check_docs,
    render_docs,
    render_pages,
)
from .results import Measurement, Results, ResultsStoreError, read_results

__all__ = [
    "GENERATED_MARKER", "CheckReport", "DocsError", "Measurement", "RenderedFile", "Results", "ResultsStoreError",
    "card_data", "check_docs", "cli_docs", "cli_export", "export_hf_card", "read_results", "render_card", "render_docs",
    "render_pages",
]
