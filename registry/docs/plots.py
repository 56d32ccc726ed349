"""Plots for the results page, as PNG bytes that are identical from one rendering to the next.

matplotlib's object API is used (no pyplot, no global backend switch), under
fixed rcParams, with the PNG's ``Software`` stamp removed. Each PNG carries a
``cc-hub-plot`` text chunk: a SHA-256 of the data it draws, so that
``cc-registry docs --check`` can tell a stale plot from one drawn from the
same data by another matplotlib or FreeType build.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any, Sequence

FINGERPRINT_KEY = "cc-hub-plot"
PLOT_STYLE_VERSION = "1"

_RC = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "path.simplify": False,
    "svg.hashsalt": "cc-hub",
    "axes.prop_cycle": "cycler('color', ['#3f51b5', '#e65100', '#2e7d32', '#6a1b9a', '#00838f', '#c62828'])",
}


_CACHE: dict[str, bytes] = {}


@dataclass(frozen=True)
class Plot:
    name: str  # file name, e.g. "top1-vs-gmacs.png"
    png: bytes
    fingerprint: str
    alt: str


def fingerprint(kind: str, data: Any) -> str:
    payload = json.dumps({"kind": kind, "style": PLOT_STYLE_VERSION, "data": data}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def png_fingerprint(png: bytes) -> str | None:
    """The data fingerprint stored in a PNG written by this module, if any."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(png)) as image:
            return (getattr(image, "text", None) or image.info).get(FINGERPRINT_KEY)
    except Exception:  # noqa: BLE001 - not a PNG at all: no fingerprint
        return None


def _render(draw, kind: str, data: Any, size: tuple[float, float] = (8.0, 4.8)) -> tuple[bytes, str]:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    key = fingerprint(kind, data)
    if key in _CACHE:  # same data, same bytes: drawing again would only cost time
        return _CACHE[key], key
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=size)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        draw(ax)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", metadata={"Software": None, FINGERPRINT_KEY: key})
    if len(_CACHE) > 32:
        _CACHE.clear()
    _CACHE[key] = buffer.getvalue()
    return _CACHE[key], key


def top1_vs_gmacs(points: Sequence[dict[str, Any]]) -> Plot:
    """Top-1 accuracy against GMACs. Each point: label, gmacs, top1, kind ('claim', 'measured', 'baseline', 'paper')."""
    points = sorted(points, key=lambda p: (p["kind"], p["label"]))
    styles = {
        "claim": dict(marker="o", color="#3f51b5", label="CondConv (index claim)"),
        "measured": dict(marker="D", color="#2e7d32", label="CondConv (measured by the bench)"),
        "baseline": dict(marker="s", color="#757575", label="plain EfficientNet (timm)"),
        "paper": dict(marker="^", color="#e65100", label="paper (Yang et al. 2019)"),
    }

    def draw(ax):
        for kind, style in styles.items():
            chosen = [p for p in points if p["kind"] == kind]
            if not chosen:
                continue
            ax.scatter([p["gmacs"] for p in chosen], [p["top1"] for p in chosen], s=48, zorder=3,
                       marker=style["marker"], color=style["color"], label=style["label"])
            for p in chosen:
                ax.annotate(p["label"], (p["gmacs"], p["top1"]), textcoords="offset points", xytext=(6, -12 if kind == "measured" else 5),
                            fontsize=8, color=style["color"])
        ax.set_xlabel("GMACs per image (multiply-adds at the model's input size)")
        ax.set_ylabel("ImageNet top-1 accuracy (%)")
        ax.set_title("Top-1 accuracy against compute")
        if points:
            xs = [p["gmacs"] for p in points]
            ys = [p["top1"] for p in points]
            ax.set_xlim(min(xs) * 0.8, max(xs) * 1.25)
            ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
        ax.legend(loc="lower right", fontsize=8, frameon=False)

    png, key = _render(draw, "top1_vs_gmacs", points)
    return Plot("top1-vs-gmacs.png", png, key, "Top-1 accuracy against GMACs for the CondConv models and plain EfficientNet baselines")


def throughput_by_batch(series: dict[str, Sequence[tuple[int, float]]], title: str) -> Plot:
    """Images per second against batch size, one line per series label."""
    series = {label: sorted(points) for label, points in sorted(series.items())}

    def draw(ax):
        for label, points in series.items():
            ax.plot([b for b, _ in points], [v for _, v in points], marker="o", label=label,
                    linestyle="--" if "timm" in label else "-")
        ax.set_xscale("log", base=2)
        batches = sorted({b for points in series.values() for b, _ in points})
        if batches:
            ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_xlabel("batch size")
        ax.set_ylabel("images / s")
        ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.legend(fontsize=8, frameon=False)

    png, key = _render(draw, "throughput_by_batch", {"series": series, "title": title})
    return Plot("throughput-by-batch.png", png, key, "Throughput in images per second by batch size, latest bench run")
