"""The packaged cc-hub model index: data only, plus this locator.

The YAML, markdown pages, JSON Schema and templates ship as package data so
that a plain (non-editable) ``pip install`` finds them.
"""
from __future__ import annotations

from pathlib import Path

INDEX_DIR = Path(__file__).resolve().parent
ROOT_FILE = INDEX_DIR / "model-index.yml"
SCHEMA_FILE = INDEX_DIR / "schema" / "model-index.schema.json"
TEMPLATES_DIR = INDEX_DIR / "templates"


def root() -> Path:
    """Path of the packaged root ``model-index.yml``."""
    return ROOT_FILE
