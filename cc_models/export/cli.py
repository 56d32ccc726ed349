"""``cc-registry export ID --format onnx|hf-repo``: model exports (wired in ``registry/cli.py``).

Exit codes: 0 written; 1 the weights are unusable (checksum, corrupt, wrong model);
2 usage or environment (offline, onnx not installed, an unwritable folder).
"""
from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _fail(message: str, code: int) -> int:
    print(f"cc-registry: {message}", file=sys.stderr)
    return code


def cli_export_model(args: argparse.Namespace) -> int:
    import registry

    from ..errors import OfflineError, WeightsError, WeightsNotFoundError
    from ..factory import from_index

    index = registry.load(args.index)
    entry = index.get(args.id)  # UnknownModelError: exit 2 in registry.cli.main
    if args.format == "hf-repo" and not (args.pretrained or args.checkpoint):
        return _fail("--format hf-repo publishes weights: pass --pretrained (the entry's Hub weights) "
                     "or --checkpoint FILE", EXIT_USAGE)
    if args.format == "onnx":
        try:
            import onnx  # noqa: F401  (the exporter needs it)
        except ImportError:
            return _fail("--format onnx needs the onnx package: pip install 'cc-hub[onnx]'", EXIT_USAGE)
    try:
        model = from_index(entry, pretrained=args.pretrained, checkpoint_path=args.checkpoint, index=index).eval()
    except (OfflineError, WeightsNotFoundError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except WeightsError as exc:
        return _fail(str(exc), EXIT_INVALID)
    try:
        if args.format == "onnx":
            from .onnx import export_onnx

            paths = [export_onnx(model, args.out / f"{entry.id}.onnx")]
        else:
            from registry.docs import read_results, render_card

            from .hf_repo import export_hf_repo

            card = render_card(entry, index, read_results(args.results))
            paths = export_hf_repo(model, args.out, card=card)
    except OSError as exc:
        return _fail(f"cannot write to {args.out}: {exc}", EXIT_USAGE)
    for path in paths:
        print(f"wrote {path}")
    return EXIT_OK
