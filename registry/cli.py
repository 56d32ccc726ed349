"""``cc-registry``: validate, list, show, export and render the model index.

Exit codes: 0 ok, 1 invalid input or failed check, 2 usage or environment error.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import yaml

from . import index as index_mod
from . import pin
from .errors import IndexValidationError, Problem, UnknownModelError

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
MODEL_FORMATS = ("onnx", "hf-repo")


def _print_problems(problems: Sequence[Problem], stream=None) -> None:
    stream = stream or sys.stderr  # looked up per call: tests and callers may swap sys.stderr
    for problem in problems:
        print(problem, file=stream)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def cmd_validate(args: argparse.Namespace) -> int:
    paths = args.paths or [None]
    reports = []
    for path in paths:
        sources, problems = index_mod.check(path)
        reports.append({
            "path": str(path) if path is not None else str(sources.root),
            "valid": not problems,
            "files": sorted({d.file for d in sources.documents}),
            "models": len(sources.models),
            "collections": len(sources.collections),
            "problems": [p.to_dict() for p in problems],
        })
    ok = all(r["valid"] for r in reports)
    if args.format == "json":
        print(json.dumps({"valid": ok, "reports": reports}, indent=2))
    else:
        for report in reports:
            if report["valid"]:
                print(f"OK {report['path']}: {_count(report['models'], 'model')}, "
                      f"{_count(report['collections'], 'collection')} in {_count(len(report['files']), 'file')}")
            else:
                _print_problems([Problem(**p) for p in report["problems"]], sys.stdout)
                print(f"INVALID {report['path']}: {_count(len(report['problems']), 'problem')}")
    return EXIT_OK if ok else EXIT_INVALID


def _load(args: argparse.Namespace):
    return index_mod.load(args.index)


def cmd_list(args: argparse.Namespace) -> int:
    from .table import COLUMNS, models_frame  # pandas: imported only by the commands that need it

    frame = models_frame(_load(args))
    if args.format == "json":
        print(frame.to_json(orient="records", indent=2))
    elif args.format == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    else:
        shown = frame.rename(columns=COLUMNS)
        print(shown.to_string(index=False, na_rep="-"))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from .table import entry_dict

    entry = _load(args).get(args.id)
    data = entry_dict(entry)
    if args.format == "json":
        print(json.dumps(data, indent=2, allow_nan=False))  # RFC 8259: validation already refused NaN
    else:
        print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100).rstrip())
    return EXIT_OK


def cmd_docs(args: argparse.Namespace) -> int:
    from .docs import cli_docs  # imported late: jinja2/matplotlib are only needed here

    return cli_docs(args)


def _model_exporter():
    """The ONNX / Hub-repo exporter: it needs the models, which live above the registry (DESIGN.md's layers),
    so cc_models plugs it in through the entry point ``cc_hub.exporters:models`` instead of an import here."""
    from importlib.metadata import entry_points

    found = list(entry_points(group="cc_hub.exporters", name="models"))
    return found[0].load() if found else None


def cmd_export(args: argparse.Namespace) -> int:
    if args.format in MODEL_FORMATS:
        exporter = _model_exporter()
        if exporter is None:
            print(f"cc-registry: --format {args.format} needs the models package (cc_models) installed with "
                  "cc-hub: pip install -e . (it registers the entry point cc_hub.exporters:models)", file=sys.stderr)
            return EXIT_USAGE
        return exporter(args)
    if args.pretrained or args.checkpoint:
        print(f"cc-registry: --pretrained/--checkpoint apply to --format {'/'.join(MODEL_FORMATS)}", file=sys.stderr)
        return EXIT_USAGE
    from .docs import cli_export

    return cli_export(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cc-registry",
        description="Validate, query and render the cc-hub model index (default: the packaged index).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="schema + semantic validation with located errors",
                       description="Validate index files: a root model-index.yml, an imported YAML file or a "
                                   "markdown page with an embedded model-index block. Exit 0 valid, 1 invalid.")
    p.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="files or folders (default: the packaged index)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("list", help="one row per model with its key figures")
    p.add_argument("--index", type=Path, help="index root (default: packaged)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="everything about one model, resolved")
    p.add_argument("id", help="model id, e.g. tf_efficientnet_cc_b1_8e")
    p.add_argument("--index", type=Path, help="index root (default: packaged)")
    p.add_argument("--format", choices=("yaml", "json"), default="yaml")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("docs", help="render the documentation pages from the index and the bench results",
                       description="Render docs pages (collection pages, index, results with plots, how we verify). "
                                   "--check exits 1 when the pages on disk differ from a fresh rendering.")
    p.add_argument("--index", type=Path, help="index root (default: packaged)")
    p.add_argument("--results", type=Path, default=Path("results"), help="bench results store (default: ./results)")
    p.add_argument("--out", type=Path, default=Path("docs"), help="output folder (default: ./docs)")
    p.add_argument("--check", action="store_true", help="compare with the pages on disk instead of writing")
    p.set_defaults(func=cmd_docs)

    p = sub.add_parser("export", help="export one model: model card, Hub repo folder or ONNX",
                       description="hf-card: README.md (a Hugging Face model card). hf-repo: config.json + "
                                   "model.safetensors + README.md, a folder timm loads as hf-hub:ORG/NAME. "
                                   "onnx: ID.onnx with a dynamic batch, height and width.")
    p.add_argument("id", help="model id")
    p.add_argument("--format", choices=("hf-card", *MODEL_FORMATS), default="hf-card")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--pretrained", action="store_true", help="onnx/hf-repo: the entry's Hub weights")
    p.add_argument("--checkpoint", type=Path, default=None, help="onnx/hf-repo: weights from this file")
    p.add_argument("--index", type=Path, help="index root (default: packaged)")
    p.add_argument("--results", type=Path, default=None, help="bench results store to include measured figures")
    p.set_defaults(func=cmd_export)

    pin.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # an index's text in a message must not fail on an ASCII terminal
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except IndexValidationError as exc:
        _print_problems(exc.problems)
        print(f"cc-registry: the index is invalid ({_count(len(exc.problems), 'problem')}); run `cc-registry validate` "
              "on it for details", file=sys.stderr)
        return EXIT_INVALID
    except UnknownModelError as exc:
        print(f"cc-registry: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `cc-registry list | head`
        return EXIT_OK
    except KeyboardInterrupt:
        print("cc-registry: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
