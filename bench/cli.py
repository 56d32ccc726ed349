"""``cc-bench``: verify every claim of the model index by measuring it, and keep the results.

Exit codes: 0 nothing failed (skips allowed), 1 a claim failed or a check errored
(or the index is invalid), 2 usage or environment error.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from registry.results_schema import FORMAT, RUN_CHECKS as CHECK_NAMES

from . import options
from .options import UsageError
from .store import LOCAL_STORE, PUBLISHED_STORE

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# Without --repeats, CPU throughput keeps timing a batch size until this much has run (batch 1: ~30 runs).
CPU_MIN_TIME_S = 0.5

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

STORE_HELP = f"""\
results (--results DIR, default ./{LOCAL_STORE}, which git ignores): runs/<run_id>.json for every
  run, and results.csv rebuilt from all runs after each one (format: registry/results_schema.py).
  The repository's results/ and docs/ change only with `cc-bench publish`.

accuracy across processes (gloo on CPU, nccl on CUDA; each image counted once):
  torchrun --nproc_per_node=N -m bench run --all --checks accuracy --imagenet DIR
  (`python -m bench` is cc-bench; rank 0 prints and stores)
"""


def _check_names(text: str) -> list[str]:
    """One ``--checks`` value: comma-separated names (or ``all``), at least one."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one check ({', '.join(CHECK_NAMES)} or all)")
    for name in names:
        if name != "all" and name not in CHECK_NAMES:
            raise argparse.ArgumentTypeError(f"unknown check {name!r}; choose from {', '.join(CHECK_NAMES)}")
    return list(CHECK_NAMES) if "all" in names else names


def _selected(values: list[list[str]] | None) -> tuple[str, ...]:
    selected = {name for names in values or [CHECK_NAMES] for name in names}
    return tuple(n for n in CHECK_NAMES if n in selected)


def _settings(args: argparse.Namespace, names: tuple[str, ...], world: int):
    """Validate the measurement options and resolve their device-dependent defaults."""
    from . import env as env_mod
    from .accuracy import DatasetError, find_imagenet
    from .checks.base import Settings

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
        batch_sizes=options.flat(args.batch_sizes) or ((1, 256) if cuda else (1, 32)),
        eval_batch_size=args.eval_batch_size or (256 if cuda else 32),
        workers=args.workers if args.workers is not None else min(4, max(1, (os.cpu_count() or 1) // world)),
        warmup=args.warmup if args.warmup is not None else (5 if cuda else 1),
        repeats=args.repeats if args.repeats is not None else (20 if cuda else 3),
        budget_s=args.time_budget,
        min_time_s=0.0 if args.repeats is not None or cuda else CPU_MIN_TIME_S,
    )


def _run_record(args: argparse.Namespace, index, entries, names, settings, environment: dict, world: int) -> dict:
    """The run file's header; its ``checks`` fill in as the run proceeds."""
    from . import store

    started = store.utc_now()
    return {
        "format": FORMAT,
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


def cmd_run(args: argparse.Namespace) -> int:
    import registry

    from . import distributed, env as env_mod, report, runner, store
    from .checks.base import Context
    from .progress import Progress

    if bool(args.all) == bool(args.ids):
        raise UsageError("give model ids or --all (not both)" if args.all else "give model ids, or --all")
    names = _selected(args.checks)
    world = distributed.launched_world_size()
    if world > 1 and names != ("accuracy",):
        raise UsageError(f"under torchrun (WORLD_SIZE={world}) only the accuracy check is distributed: use "
                         "`--checks accuracy`, and run the other checks without torchrun")
    options.apply_cpu_settings(args)
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
            store.check_store(results_dir)
            if "throughput" in names:
                history = store.history(results_dir, warn)
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
        code = EXIT_OK if report.ok(results) else EXIT_FAILED
        if args.format == "json":
            payload = report.json_report(
                results, run_id=run_file.run_id, timestamp=run_file.record["timestamp"],
                git_commit=environment["git_commit"], environment=run_file.record["environment"],
                settings=run_file.record["settings"], run_file=str(run_file.path), table=str(table_path),
                warnings=notes, exit_code=code)
            print(json.dumps(store.jsonable(payload), indent=2, default=str))
        else:
            lines = ["", f"results: {run_file.path} (table {table_path}); `cc-bench publish {run_file.run_id}` "
                         f"adds it to {PUBLISHED_STORE}/ and the docs"]
            print(report.text(results, run_file.run_id, lines))
        return code
    finally:
        distributed.shutdown(d)


def cmd_publish(args: argparse.Namespace) -> int:
    import registry
    from registry.docs import DocsError

    from . import store
    from .publish import publish

    notes: list[str] = []

    def warn(message: str) -> None:
        notes.append(message)
        print(f"cc-bench: warning: {message}", file=sys.stderr)

    store.check_store(args.source)
    local = {run["run_id"]: run for run in store.iter_runs(args.source, warn)}
    unknown = [run_id for run_id in args.run_ids if run_id not in local]
    if unknown:
        raise UsageError(f"no run {', '.join(unknown)} in {args.source} (it has {len(local)} readable runs)")
    chosen = args.run_ids or ([*local][-1:] if args.latest else list(local))
    index = registry.load(args.index)
    try:
        done = publish(index, args.results, args.docs_out, [args.source / "runs" / f"{r}.json" for r in chosen], warn)
    except DocsError as exc:
        print(f"{args.prog}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        raise UsageError(f"cannot write the docs into {args.docs_out}: {exc}") from None
    if args.format == "json":
        print(json.dumps({"copied": done.copied, "already_published": done.already, "table": str(done.table),
                          "docs": str(args.docs_out), "latest_run": done.latest_run, "warnings": notes}, indent=2))
    else:
        print(f"published {len(done.copied)} new run(s) into {args.results} ({len(done.already)} already there); "
              f"{done.table} rebuilt, {len(done.docs)} docs files rendered into {args.docs_out} "
              f"(latest run {done.latest_run or 'none'})")
    return EXIT_OK


def build_parser(prog: str = "cc-bench") -> argparse.ArgumentParser:
    from . import compare

    parser = argparse.ArgumentParser(
        prog=prog, description="Verify the model index's claims (parameters, FLOPs, file size, accuracy) by "
                               "measuring them, time throughput, and keep every run.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = options.common_parser()
    p = sub.add_parser(
        "run", help="measure models and compare with the index's claims", parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run checks on models of the index and print one table (model x check: claimed, measured, "
                    "tolerance, status) and a verdict. Exit 0 when nothing failed (skips allowed), 1 when a claim "
                    "failed or a check errored, 2 on usage or environment errors.\n\nchecks: params (vs Parameters, "
                    "published rounded to 10k), flops (fvcore multiply-adds at Image Size, batch 1, vs FLOPs within "
                    "1%; torch.utils.flop_counter as a cross-check), filesize (release file bytes vs File Size, "
                    "exact), accuracy (ImageNet-1k val top-1/top-5 vs Results within 0.1 pt), throughput "
                    "(images/s; a drop of more than 10% against the previous run on the same machine fingerprint "
                    "and settings is reported as a regression, not a failure). params and flops always measure on "
                    "the CPU; --device cuda without a GPU skips the device checks with the reason. Throughput "
                    "defaults: --warmup 1, --repeats 3 on CPU, and at least 0.5 s of timed runs per batch size (unless "
                    "--repeats is given); 5 and 20 on CUDA.",
        epilog="\n".join([IMAGENET_HELP, WEIGHTS_HELP, STORE_HELP]))
    p.add_argument("ids", nargs="*", metavar="ID", help="model ids (or --all)")
    p.add_argument("--all", action="store_true", help="every model of the index")
    p.add_argument("--checks", action="append", type=_check_names, metavar="CHECK[,CHECK...]",
                   help=f"checks to run, comma-separated or repeated: {', '.join(CHECK_NAMES)} (default: all)")
    p.add_argument("--imagenet", type=Path, metavar="DIR", help="ImageNet-1k val (layouts below)")
    p.add_argument("--labels", type=Path, metavar="CSV", help="labels CSV (filename,label) for a flat image folder")
    p.add_argument("--time-budget", type=options.positive_float, default=5.0, metavar="S",
                   help="stop timing a batch size after 2 runs once the next would pass S seconds (default 5)")
    p.add_argument("--eval-batch-size", type=options.positive_int, metavar="N",
                   help="accuracy batch size (default 32 CPU, 256 CUDA)")
    p.add_argument("--workers", type=options.non_negative_int, metavar="N",
                   help="accuracy DataLoader workers per process (default min(4, CPUs / processes))")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("compare", help="ours against timm: same weights, outputs checked, timed side by side",
                       parents=[common], description=compare.DESCRIPTION)
    compare.add_arguments(p)
    p.set_defaults(func=compare.run)

    p = sub.add_parser(
        "publish", help=f"copy runs into the repository's {PUBLISHED_STORE}/ and regenerate its docs",
        description=f"Copy runs from the local store into the published results store ({PUBLISHED_STORE}/: its "
                    "runs/ and a rebuilt results.csv), then regenerate the docs pages from it, all under the "
                    "store's lock. The only command that changes what the repository publishes. With no RUN_ID: "
                    "every run of the local store (runs already published are kept as they are).")
    p.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="runs to publish (default: all; see --latest)")
    p.add_argument("--latest", action="store_true", help="only the newest run of the local store")
    p.add_argument("--from", dest="source", type=Path, default=LOCAL_STORE, metavar="DIR",
                   help=f"the store to publish from (default ./{LOCAL_STORE})")
    p.add_argument("--results", type=Path, default=PUBLISHED_STORE, metavar="DIR",
                   help=f"the published store (default ./{PUBLISHED_STORE})")
    p.add_argument("--docs-out", type=Path, default=Path("docs"), metavar="DIR",
                   help="where the docs pages are regenerated (default ./docs)")
    p.add_argument("--index", type=Path, help="index root, file or folder (default: the packaged index)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    p.set_defaults(func=cmd_publish)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "cc-bench") -> int:
    from registry.errors import IndexValidationError, UnknownModelError
    from registry.results_schema import ResultsStoreError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    args.prog, args.argv = prog, argv
    try:
        return args.func(args)
    except (UsageError, UnknownModelError, ResultsStoreError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except IndexValidationError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        n = len(exc.problems)
        print(f"{prog}: the index is invalid ({n} problem{'' if n == 1 else 's'}); run `cc-registry validate` on it "
              "for details", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; the results of the models already finished are kept in the results store",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
