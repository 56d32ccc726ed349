"""The options ``cc-bench run`` and ``cc-bench compare`` share: one parent parser, one format per option.

Values are checked as they are parsed: a bad one is argparse's usage error
(exit 2, the option named), never a traceback.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .store import LOCAL_STORE


class UsageError(Exception):
    """Bad arguments or an unusable environment: exit 2 with this message."""


def positive_int(text: str) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else positive_int(text)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive finite number")
    return value


def int_list(text: str) -> list[int]:
    """``"1,32"`` (and, with ``nargs="+"``, ``1 32``): at least one positive integer."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one positive integer")
    return [positive_int(p) for p in parts]


def flat(lists: list[list[int]] | None) -> tuple[int, ...] | None:
    """The values of a repeated ``int_list`` option, in order, without duplicates."""
    return None if lists is None else tuple(dict.fromkeys(v for values in lists for v in values))


def common_parser() -> argparse.ArgumentParser:
    """The parent parser of ``run`` and ``compare``."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--index", type=Path, help="index root, file or folder (default: the packaged index)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto",
                   help="where models are timed (default auto: cuda if available)")
    p.add_argument("--batch-sizes", type=int_list, nargs="+", metavar="N",
                   help="batch sizes to time, e.g. 1 32 or 1,32 (default: 1 32 on CPU, 1 256 on CUDA)")
    p.add_argument("--threads", type=positive_int, metavar="N", help="torch CPU threads (default: torch's default)")
    p.add_argument("--no-tune-cpu", dest="tune_cpu", action="store_false",
                   help="leave the allocator and denormal handling as the process started (default: glibc malloc "
                        "tuned, denormals flushed, see cc_models.runtime.tune_cpu; the run record says which)")
    p.add_argument("--warmup", type=non_negative_int, metavar="N", help="untimed runs per batch size")
    p.add_argument("--repeats", type=positive_int, metavar="N", help="timed runs per batch size (median reported)")
    p.add_argument("--checkpoint-dir", type=Path, metavar="DIR", help="local weights (see `cc-bench run --help`)")
    p.add_argument("--results", type=Path, default=LOCAL_STORE, metavar="DIR",
                   help=f"results store to record the run in (default: ./{LOCAL_STORE}, ignored by git; "
                        "`cc-bench publish` copies runs into the repository's results/)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    return p


def apply_cpu_settings(args: argparse.Namespace) -> None:
    """``--threads`` and, unless ``--no-tune-cpu``, the tuned allocator and denormal flushing
    (``cc_models.runtime.tune_cpu``): first thing, before any model allocates."""
    import torch

    from cc_models.runtime import tune_cpu

    if args.tune_cpu:
        for note in tune_cpu(args.threads).notes:
            print(f"{getattr(args, 'prog', 'cc-bench')}: note: {note}", file=sys.stderr)
    elif args.threads is not None:
        torch.set_num_threads(args.threads)
