"""``cc-registry docs`` and ``cc-registry export``; wired in ``registry/cli.py``.

Exit codes as everywhere: 0 ok, 1 stale pages / unreadable results store / broken page template,
2 usage or environment error.
"""
from __future__ import annotations

import argparse
import sys

from .. import index as index_mod
from .render import DocsError, check_docs, render_docs
from .results import ResultsStoreError, read_results

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _fail(message: str, code: int = EXIT_INVALID) -> int:
    print(f"cc-registry: {message}", file=sys.stderr)
    return code


def cli_docs(args: argparse.Namespace) -> int:
    index = index_mod.load(args.index)
    try:
        results = read_results(args.results)  # read once: for the pages and for the summary line
        if args.check:
            report = check_docs(index, results, args.out)
            if report.ok:
                print(f"docs up to date: {report.checked} files in {args.out}")
                return EXIT_OK
            for problem in report.problems:
                print(problem)
            print(f"docs are stale ({len(report.problems)} of {report.checked} files); "
                  f"run `cc-registry docs --out {args.out}` and commit the result", file=sys.stderr)
            return EXIT_INVALID
        paths = render_docs(index, results, args.out)
    except ResultsStoreError as exc:
        return _fail(f"cannot read the results store: {exc}")
    except DocsError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot write the pages: {exc}", EXIT_USAGE)
    origin = f"results from {results.source}" if results.has_runs else "no bench run recorded"
    print(f"rendered {len(paths)} files into {args.out} ({origin})")
    return EXIT_OK


def cli_export(args: argparse.Namespace) -> int:
    from .hf_card import export_hf_card

    index = index_mod.load(args.index)
    entry = index.get(args.id)  # UnknownModelError: exit 2 in registry.cli.main
    try:
        results = read_results(getattr(args, "results", None))
        path = export_hf_card(entry, index, results, args.out)
    except ResultsStoreError as exc:
        return _fail(f"cannot read the results store: {exc}")
    except DocsError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot write the model card: {exc}", EXIT_USAGE)
    print(f"wrote {path}")
    return EXIT_OK
