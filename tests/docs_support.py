"""Helpers for the docs tests: fixture results stores, a hostile index, building the site."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

import model_index
from constants import MACS, PARAMS  # noqa: F401  (re-exported: fvcore's counts, what a bench run would measure)
from constants import MODEL_IDS as IDS
from registry.results_schema import COLUMNS

REPO = Path(__file__).resolve().parents[1]
XSS_MARK = "__cc_xss"


def row(run_id: str, timestamp: str, model_id: str, check: str, metric: str, measured, status: str, *,
        claimed="", tolerance="", unit="", reason="", batch_size="", extra="", device_name="2-core CPU") -> dict:
    return {
        "run_id": run_id, "timestamp": timestamp, "git_commit": "0123456789abcdef0123456789abcdef01234567",
        "model_id": model_id, "check": check, "metric": metric, "claimed": claimed, "measured": measured,
        "tolerance": tolerance, "unit": unit, "status": status, "reason": reason, "device": "cpu",
        "device_name": device_name, "dtype": "float32", "threads": "2", "torch_version": "2.14.1",
        "batch_size": batch_size, "extra": extra,
    }


def fixture_rows() -> list[dict]:
    """Two runs. The older says b0_4e's parameters mismatch; the newer verifies them.

    Newer run: params and MACs verified for all three, b0_8e's file size a mismatch, accuracy
    skipped (no ImageNet), throughput at three batch sizes, a `compare` check and an unknown check.
    """
    old, new = ("run-2025-01-01", "2025-01-01T10:00:00Z"), ("run-2025-02-01", "2025-02-01T10:00:00+00:00")
    rows = [row(*old, IDS[0], "params", "parameters", 13000000, "fail", claimed=13310000, tolerance="0.1%")]
    for model_id in IDS:
        rows.append(row(*new, model_id, "params", "parameters", PARAMS[model_id], "pass",
                        claimed={"tf_efficientnet_cc_b0_4e": 13310000, "tf_efficientnet_cc_b0_8e": 24010000,
                                 "tf_efficientnet_cc_b1_8e": 39720000}[model_id], tolerance="0.1%"))
        rows.append(row(*new, model_id, "flops", "macs", MACS[model_id], "pass", claimed=MACS[model_id], tolerance="0"))
        rows.append(row(*new, model_id, "flops", "flop_counter_flops", 2 * MACS[model_id], "info", unit="FLOPs"))
        rows.append(row(*new, model_id, "accuracy", "top1", "", "skip",
                        reason="ImageNet validation set not found (set CC_IMAGENET_VAL)"))
        rows.append(row(*new, model_id, "accuracy", "top5", "", "skip",
                        reason="ImageNet validation set not found (set CC_IMAGENET_VAL)"))
        for batch, speed in ((1, 22.5), (8, 15.25), (32, 11.75)):
            scale = {"tf_efficientnet_cc_b0_4e": 1.0, "tf_efficientnet_cc_b0_8e": 0.95, "tf_efficientnet_cc_b1_8e": 0.6}[model_id]
            rows.append(row(*new, model_id, "throughput", "images_per_s", round(speed * scale, 2), "info",
                            unit="images/s", batch_size=batch, extra=json.dumps({"warmup": 3, "repeats": 10})))
    rows.append(row(*new, IDS[0], "filesize", "bytes", 53490940, "pass", claimed=53490940, tolerance="0"))
    rows.append(row(*new, IDS[1], "filesize", "bytes", 96287000, "fail", claimed=96287616, tolerance="0",
                    reason="size differs from the claim"))
    for batch, ours, timm in ((1, 22.5, 25.0), (32, 11.75, 12.5)):
        rows.append(row(*new, IDS[0], "compare", "images_per_s_ours", ours, "info", batch_size=batch))
        rows.append(row(*new, IDS[0], "compare", "images_per_s_timm", timm, "info", batch_size=batch))
        rows.append(row(*new, IDS[0], "compare", "ratio", round(ours / timm, 3), "info", batch_size=batch))
    rows.append(row(*new, IDS[2], "latency_p99", "ms", 91.5, "info", unit="ms", batch_size=1))
    return rows


def write_results(folder: Path, rows: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(fixture_rows() if rows is None else rows)
    return folder


PAYLOAD_SCRIPT = f"<script>window.{XSS_MARK} = 'script'</script>"
PAYLOAD_IMG = f"<img src=x onerror=\"window.{XSS_MARK} = 'img'\">"


def hostile_index(folder: Path) -> Path:
    """A copy of the packaged index whose strings carry markup and script; returns its root file."""
    root = folder / "hostile_index"
    shutil.copytree(model_index.INDEX_DIR, root, ignore=shutil.ignore_patterns("__pycache__", "*.py", "templates"))
    page = root / "collections" / "tf-efficientnet-condconv.md"
    text = page.read_text()
    text = text.replace(
        "This collection of models amends EfficientNet",
        f"Hostile prose: {PAYLOAD_SCRIPT} and {PAYLOAD_IMG} and [a link](javascript:window.{XSS_MARK}='link') "
        f"and [another](java\nscript:window.{XSS_MARK}='split') and {{: onclick=\"window.{XSS_MARK}='attr'\"}} "
        f"and $\\text{{<img src=x onerror=\"window.{XSS_MARK}='math'\">}}$.\n\nThis collection of models amends EfficientNet",
    )
    text = text.replace("bibsource = {dblp computer science bibliography, https://dblp.org}",
                        f"bibsource = {{</code></pre>{PAYLOAD_SCRIPT}}}")
    text = text.replace("Title: 'CondConv: Conditionally Parameterized Convolutions for Efficient Inference'",
                        f"Title: {json.dumps(PAYLOAD_IMG)}")
    page.write_text(text)
    for path in sorted((root / "models").glob("*.yml")):
        data = path.read_text()
        data = data.replace("        - Weight Decay\n", f"        - Weight Decay\n        - {json.dumps(PAYLOAD_IMG)}\n", 1)
        path.write_text(data)
    first = root / "models" / "tf_efficientnet_cc_b0_4e.yml"
    data = yaml.safe_load(first.read_text())
    data["Models"][0]["Errata"][0]["Reason"] = f"ends the comment --> {PAYLOAD_SCRIPT} | cell"
    first.write_text(yaml.safe_dump(data, sort_keys=False, width=1000))
    return root / "model-index.yml"


def hostile_rows() -> list[dict]:
    rows = fixture_rows()
    rows.append(row("run-2025-03-01", "2025-03-01T00:00:00Z", IDS[0], "accuracy", "top1", "", "error",
                    reason=f"{PAYLOAD_SCRIPT} {PAYLOAD_IMG}", device_name=PAYLOAD_IMG))
    return rows


def site_config(tmp: Path, docs_dir: Path) -> Path:
    """The repo's mkdocs.yml, pointed at ``docs_dir`` (the repo's overrides/ kept)."""
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    config["docs_dir"] = str(docs_dir.resolve())
    config["theme"]["custom_dir"] = str((REPO / config["theme"]["custom_dir"]).resolve())
    path = tmp / f"mkdocs-{docs_dir.name}.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def build_site(tmp: Path, docs_dir: Path, site_dir: Path) -> subprocess.CompletedProcess:
    config = site_config(tmp, docs_dir)
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site_dir)],
                          capture_output=True, text=True, env=env, cwd=tmp)


EXTERNAL_RE = re.compile(r"<(script|link|img|iframe|source|video|audio)\b[^>]*\b(src|href)=[\"']?(https?:)?//", re.I)
