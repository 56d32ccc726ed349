"""Helpers for the bench tests: index fixtures, generated image sets, running ``cc-bench`` offline.

Import from a test module: ``from bench_support import ...`` (tests/ is on sys.path under pytest).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import model_index
from constants import MODEL_IDS  # noqa: F401  (re-exported for the bench tests)

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RELEASE_BASE = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights"


def copy_index(dest: Path) -> Path:
    """A copy of the packaged index under ``dest``; returns its root file."""
    target = dest / "model_index"
    shutil.copytree(model_index.INDEX_DIR, target, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    return target / "model-index.yml"


def set_field(root: Path, model_id: str, key: str, value: object) -> None:
    """Replace the first ``key: ...`` line of ``models/<model_id>.yml`` (keeps the indentation)."""
    path = root.parent / "models" / f"{model_id}.yml"
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(rf"^(\s*){re.escape(key)}: .*$", re.MULTILINE)
    new, n = pattern.subn(lambda m: f"{m.group(1)}{key}: {value}", text, count=1)
    assert n == 1, f"{key} not found in {path}"
    path.write_text(new, encoding="utf-8")


def override(root: Path, model_id: str, section: str, key: str, value: object) -> None:
    """Give the (single) model of ``models/<model_id>.yml`` its own ``section: {key: value}``, overriding what it
    inherits from its collection (the file must not have that section yet)."""
    path = root.parent / "models" / f"{model_id}.yml"
    text = path.read_text(encoding="utf-8")
    assert f"\n    {section}:" not in text, f"{section} already in {path}"
    path.write_text(text.rstrip("\n") + f"\n    {section}:\n      {key}: {value}\n", encoding="utf-8")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def release_name(model_id: str, path: Path, ext: str = "pth") -> str:
    """The torch.hub-style name ``<model_id>-<sha256[:8]>.<ext>`` of the file at ``path``."""
    return f"{model_id}-{sha256_file(path)[:8]}.{ext}"


def offline_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment for a subprocess that must not touch the network or the user's caches."""
    env = dict(os.environ)
    env.update({
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp / "hf-home"),
        "TORCH_HOME": str(tmp / "torch-home"),
        "HF_ENDPOINT": "http://127.0.0.1:9",  # nothing listens there
        "PYTHONWARNINGS": "ignore",
    })
    env.pop("WORLD_SIZE", None)
    env.update(extra)
    return env


def cc_bench(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "cc-bench"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def run_records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((results / "runs").glob("*.json"))]

