"""``cc-bench``: verify every claim of the model index by measuring it, and keep the results.

Exit codes: 0 nothing failed (skips allowed), 1 a claim failed or a check errored
(or the index is invalid), 2 usage or environment error.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
CHECK_NAMES = ("params", "flops", "filesize", "accuracy", "throughput")

IMAGENET_HELP = """\
--imagenet DIR layouts (ImageNet-1k val):
  ImageFolder  DIR/val/<wnid>/*.JPEG (or DIR/<wnid>/*.JPEG). Class index = position of the
               folder in sorted order, so all 1000 class folders must be present.
  flat         images in DIR/val/ (or DIR/) plus a CSV with header "filename,label"
               (--labels CSV, else labels.csv or val_labels.csv in DIR/val/ or DIR/);
               filename is relative to the image folder; label is a class index (0-999)
               or a wnid (wnids are indexed in sorted order, so all 1000 must occur).
"""

WEIGHTS_HELP = """\
--checkpoint-dir DIR holds release files (<model>-<sha256[:8]>.pth, SHA-256 prefix checked)
  and/or one folder per model id (DIR/<model id>/model.safetensors or pytorch_model.bin).
  filesize: found there or in torch.hub's folder, else downloaded through cc_models.
  accuracy: weights from there, else from the Hugging Face Hub (HF_ENDPOINT, HF_HOME,
  HF_HUB_OFFLINE=1 respected). Offline without a local copy, both checks are skipped.
"""

STORE_HELP = """\
results (--results DIR, default ./results): runs/<run_id>.json for every run, and
  results.csv rebuilt from all runs after each one (format: bench/store.py). The docs
  pages are then regenerated (registry.docs) into --docs-out unless --no-docs.

accuracy across processes (gloo on CPU, nccl on CUDA; each image counted once):
  torchrun --nproc_per_node=N -m bench.accuracy --all --imagenet DIR
  (same options as `cc-bench run --checks accuracy`; rank 0 prints and stores)
"""


class UsageError(Exception):
    """Bad arguments or an unusable environment: exit 2 with this message."""


def _ints(values: Sequence[str] | None, what: str) -> tuple[int, ...] | None:
    if values is None:
        return None
    out = []
    for value in values:
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            if not part.isdigit() or int(part) < 1:
                raise UsageError(f"{what}: {part!r} is not a positive integer")
            out.append(int(part))
    if not out:
        raise UsageError(f"{what}: give at least one value")
    return tuple(dict.fromkeys(out))


def _check_names(values: Sequence[str] | None) -> tuple[str, ...]:
    if not values:
        return CHECK_NAMES
    names = []
    for value in values:
        for part in value.split(","):
            part = part.strip().lower()
            if not part:
                continue
            if part == "all":
                names += CHECK_NAMES
            elif part in CHECK_NAMES:
                names.append(part)
            else:
                raise UsageError(f"--checks: unknown check {part!r}; choose from {', '.join(CHECK_NAMES)}")
    selected = set(names)
    return tuple(n for n in CHECK_NAMES if n in selected)


def _render_docs(index, results_dir: Path, out_dir: Path) -> dict:
    try:
        from registry.docs import render_docs
    except ImportError as exc:
        return {"status": "skipped", "note": f"docs not rendered: registry.docs.render_docs is not available ({exc})"}
    try:
        render_docs(index, results_dir, out_dir)
    except Exception as exc:  # the measurements are stored; a broken renderer must not hide them
        message = str(exc).splitlines()[0] if str(exc) else ""
        return {"status": "error", "note": f"docs not rendered: {type(exc).__name__}: {message}"}
    return {"status": "rendered", "note": f"docs rendered into {out_dir}", "out": str(out_dir)}


_MINIMUM = {"eval_batch_size": 1, "workers": 0, "warmup": 0, "repeats": 1}


def _settings(args: argparse.Namespace, names: tuple[str, ...], world: int):
    """Validate the measurement options and resolve their device-dependent defaults."""
    from . import env as env_mod
    from .accuracy import DatasetError, find_imagenet
    from .checks.base import Settings

    for option, minimum in _MINIMUM.items():
        value = getattr(args, option)
        if value is not None and value < minimum:
            raise UsageError(f"--{option.replace('_', '-')} must be at least {minimum}")
    if args.time_budget <= 0:
        raise UsageError("--time-budget must be positive")
    if args.checkpoint_dir is not None and not args.checkpoint_dir.is_dir():
        raise UsageError(f"--checkpoint-dir {args.checkpoint_dir}: no such folder")
    if args.labels is not None and args.imagenet is None:
        raise UsageError("--labels needs --imagenet DIR (the folder holding the images)")
    device, cuda_unavailable = env_mod.resolve_device(args.device)
    cuda = device == "cuda"
    imagenet = None
    if args.imagenet is not None and "accuracy" in names:
        try:
            imagenet = find_imagenet(args.imagenet, args.labels)
        except DatasetError as exc:
            raise UsageError(str(exc)) from None
    return Settings(
        device=device,
        cuda_unavailable=cuda_unavailable if cuda else None,
        imagenet=imagenet,
        checkpoint_dir=args.checkpoint_dir,
        batch_sizes=_ints(args.batch_sizes, "--batch-sizes") or ((256,) if cuda else (1, 32)),
        eval_batch_size=args.eval_batch_size or (256 if cuda else 32),
        workers=args.workers if args.workers is not None else min(4, max(1, (os.cpu_count() or 1) // world)),
        warmup=args.warmup if args.warmup is not None else (5 if cuda else 1),
        repeats=args.repeats if args.repeats is not None else (20 if cuda else 3),
        budget_s=args.time_budget,
    )


def _run_record(args: argparse.Namespace, index, entries, names, settings, environment: dict, world: int) -> dict:
    """The run file's header; its ``checks`` fill in as the run proceeds."""
    from . import store

    started = store.utc_now()
    return {
        "format": store.FORMAT,
        "run_id": store.new_run_id(started),
        "timestamp": store.iso(started),
        "finished": None,
        "git_commit": environment["git_commit"],
        "environment": {**environment, "processes": world},
        "command": [args.prog, *args.argv],
        "index": str(index.root),
        "models": [e.id for e in entries],
        "checks_requested": list(names),
        "settings": {
            "device_requested": args.device, "batch_sizes": list(settings.batch_sizes),
            "eval_batch_size": settings.eval_batch_size, "workers": settings.workers,
            "warmup": settings.warmup, "repeats": settings.repeats, "time_budget_s": settings.budget_s,
            "imagenet": settings.imagenet.describe() if settings.imagenet else None,
            "checkpoint_dir": str(settings.checkpoint_dir) if settings.checkpoint_dir else None,
        },
        "checks": [],
    }


def apply_cpu_settings(args: argparse.Namespace) -> None:
    """``--threads`` and, unless ``--no-tune-cpu``, the tuned allocator and denormal flushing
    (``cc_models.runtime.tune_cpu``): first thing, before any model allocates."""
    import torch

    from cc_models.runtime import tune_cpu

    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")
    if args.tune_cpu:
        for note in tune_cpu(args.threads).notes:
            print(f"{getattr(args, 'prog', 'cc-bench')}: note: {note}", file=sys.stderr)
    elif args.threads is not None:
        torch.set_num_threads(args.threads)


def add_cpu_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's default)")
    p.add_argument("--no-tune-cpu", dest="tune_cpu", action="store_false",
                   help="leave the allocator and denormal handling as the process started (default: glibc malloc "
                        "tuned, denormals flushed, see cc_models.runtime.tune_cpu; the run record says which)")


def cmd_run(args: argparse.Namespace) -> int:
    import registry

    from . import distributed, env as env_mod, report, runner, store
    from .checks.base import Context
    from .progress import Progress

    if bool(args.all) == bool(args.ids):
        raise UsageError("give model ids or --all (not both)" if args.all else "give model ids, or --all")
    names = _check_names(args.checks)
    world = distributed.launched_world_size()
    if world > 1 and names != ("accuracy",):
        raise UsageError(f"under torchrun (WORLD_SIZE={world}) only the accuracy check is distributed: use "
                         "`--checks accuracy` (or `-m bench.accuracy`), and run the other checks without torchrun")
    apply_cpu_settings(args)
    settings = _settings(args, names, world)
    index = registry.load(args.index)
    entries = list(index) if args.all else [index.get(model_id) for model_id in dict.fromkeys(args.ids)]

    d = distributed.init("cpu" if settings.cuda_unavailable else settings.device)
    try:
        environment = env_mod.collect(settings.device).to_dict()
        notes: list[str] = []

        def warn(message: str) -> None:
            notes.append(message)
            print(f"cc-bench: warning: {message}", file=sys.stderr)

        results_dir = Path(args.results)
        history = None
        run_file = None
        if d.is_main:  # only rank 0 reads and writes the store
            if "throughput" in names:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    history = store.read_table(results_dir, warn)
            run_file = store.RunFile(results_dir, _run_record(args, index, entries, names, settings, environment,
                                                              world))

        def save(results) -> None:
            if run_file is not None:
                run_file.record["checks"] = [r.to_dict() for r in results]
                run_file.save()

        with Progress.create(enabled=None if d.is_main else False) as progress:
            ctx = Context(index=index, settings=settings, env=environment, history=history, progress=progress,
                          dist=d)
            results = runner.run(entries, names, ctx, after_model=save)
        if not d.is_main:
            return EXIT_OK

        run_file.record["finished"] = store.iso(store.utc_now())
        save(results)
        table_path = store.rebuild_table(results_dir, warn)
        docs = ({"status": "skipped", "note": "docs not rendered (--no-docs)"} if args.no_docs
                else _render_docs(index, results_dir, args.docs_out))
        code = EXIT_OK if report.ok(results) else EXIT_FAILED
        if args.format == "json":
            payload = report.json_report(
                results, run_id=run_file.run_id, timestamp=run_file.record["timestamp"],
                git_commit=environment["git_commit"], environment=run_file.record["environment"],
                settings=run_file.record["settings"], run_file=str(run_file.path), table=str(table_path),
                docs=docs, warnings=notes, exit_code=code)
            print(json.dumps(store.jsonable(payload), indent=2, default=str))
        else:
            lines = ["", f"results: {run_file.path} (table {table_path})", docs["note"]]
            print(report.text(results, run_file.run_id, lines))
        return code
    finally:
        distributed.shutdown(d)


def build_parser(prog: str = "cc-bench") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Verify the model index's claims (parameters, FLOPs, file size, accuracy) by "
                               "measuring them, time throughput, and keep every run.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "run", help="measure models and compare with the index's claims",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run checks on models of the index and print one table (model x check: claimed, measured, "
                    "tolerance, status) and a verdict. Exit 0 when nothing failed (skips allowed), 1 when a claim "
                    "failed or a check errored, 2 on usage or environment errors.\n\nchecks: params (vs Parameters, "
                    "published rounded to 10k), flops (fvcore multiply-adds at Image Size, batch 1, vs FLOPs within "
                    "1%; torch.utils.flop_counter as a cross-check), filesize (release file bytes vs File Size, "
                    "exact), accuracy (ImageNet-1k val top-1/top-5 vs Results within 0.1 pt), throughput "
                    "(images/s; a drop of more than 10%% against the previous run on the same device and settings "
                    "is reported as a regression, not a failure).",
        epilog="\n".join([IMAGENET_HELP, WEIGHTS_HELP, STORE_HELP]))
    p.add_argument("ids", nargs="*", metavar="ID", help="model ids (or --all)")
    p.add_argument("--all", action="store_true", help="every model of the index")
    p.add_argument("--checks", action="append", metavar="CHECK[,CHECK...]",
                   help=f"checks to run, comma-separated or repeated: {', '.join(CHECK_NAMES)} (default: all)")
    p.add_argument("--index", type=Path, help="index root, file or folder (default: the packaged index)")
    p.add_argument("--imagenet", type=Path, metavar="DIR", help="ImageNet-1k val (layouts below)")
    p.add_argument("--labels", type=Path, metavar="CSV", help="labels CSV (filename,label) for a flat image folder")
    p.add_argument("--checkpoint-dir", type=Path, metavar="DIR", help="local release files / weights (see below)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto",
                   help="where accuracy and throughput run (default auto: cuda if available); params and flops "
                        "always measure on the CPU; cuda without a GPU skips the device checks with the reason")
    p.add_argument("--batch-sizes", nargs="+", metavar="N",
                   help="throughput batch sizes (default: 1 32 on CPU, 256 on CUDA)")
    add_cpu_arguments(p)
    p.add_argument("--warmup", type=int, metavar="N",
                   help="untimed throughput runs per batch size (default 1 on CPU, 5 on CUDA)")
    p.add_argument("--repeats", type=int, metavar="N",
                   help="timed throughput runs per batch size; the median is reported (default 3 on CPU, 20 on CUDA)")
    p.add_argument("--time-budget", type=float, default=5.0, metavar="S",
                   help="stop timing a batch size after 2 runs once the next would pass S seconds (default 5)")
    p.add_argument("--eval-batch-size", type=int, metavar="N", help="accuracy batch size (default 32 CPU, 256 CUDA)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="accuracy DataLoader workers per process (default min(4, CPUs / processes))")
    p.add_argument("--results", type=Path, default=Path("results"), metavar="DIR",
                   help="results store (default ./results)")
    p.add_argument("--docs-out", type=Path, default=Path("docs"), metavar="DIR",
                   help="where the docs pages are regenerated (default ./docs)")
    p.add_argument("--no-docs", action="store_true", help="do not regenerate the docs pages after the run")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    p.set_defaults(func=cmd_run)

    from . import compare

    p = sub.add_parser("compare", help="ours against timm: same weights, outputs checked, timed side by side",
                       description="Build our model and timm's with the same weights, check their outputs agree within 1e-4 "
                       "(unfused, fused, channels_last), then time them interleaved in one process with timm's "
                       "plain EfficientNet as the no-CondConv reference; report images/s, ratios and peak memory. "
                       "Needs timm (exit 2 without it).")
    compare.add_arguments(p)
    p.set_defaults(func=lambda args: compare.run(args))
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "cc-bench") -> int:
    from registry.errors import IndexValidationError, UnknownModelError

    from .store import StoreError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    args.prog, args.argv = prog, argv
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except IndexValidationError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        n = len(exc.problems)
        print(f"{prog}: the index is invalid ({n} problem{'' if n == 1 else 's'}); run `cc-registry validate` on it "
              "for details", file=sys.stderr)
        return EXIT_FAILED
    except UnknownModelError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; the results of the models already finished are kept in the results store",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
