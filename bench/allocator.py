"""The allocator's share of CPU throughput: the same model in processes that differ only in their allocator.

    python -m bench.allocator [ID ...] [--impl ours,timm] [--batch-sizes 1,32] [--repeats 9] [--threads 2]
                              [--allocators default,tuned,jemalloc,tcmalloc]

The allocator is per process, so each setting gets its own worker process
(``default``: glibc as started; ``tuned``: ``cc_models.runtime.tune_cpu``, glibc's thresholds raised and
torch's large blocks in transparent huge pages; ``thresholds``: the glibc thresholds alone;
``jemalloc``/``tcmalloc``: Debian's library in ``LD_PRELOAD``, when installed, with ``tune_cpu``'s huge pages).
Every worker builds the same model in the same form (ours: fused +
channels_last; timm: channels_last), with the same threads and denormals
flushed, and waits. The parent then asks them in turn, one at a time and in
a shuffled order each round (as ``cc-bench compare``: no worker always follows
the same other one), to time one batch: interleaved, never two at once. It prints
the median images/s per allocator (with the range), each one's ratio to
``default``, and the median minor page faults per batch: the cost the
allocator setting exists to remove (none left means nothing more to gain from
it at that batch size). A speed target of the issue lives here, not in a unit
test.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from cc_models.runtime import THP_ENV

EXIT_OK, EXIT_USAGE = 0, 2
PRELOADS = {"jemalloc": "libjemalloc.so.2", "tcmalloc": "libtcmalloc_minimal.so.4"}
LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")
ALLOCATORS = ("default", "thresholds", "tuned", *PRELOADS)
HUGE_PAGES = ("tuned", *PRELOADS)  # the settings whose worker has torch advise huge pages (tune_cpu's default)
TARGET_TUNED_VS_DEFAULT = 1.5  # issue 9: ours at least 1.5x its own default-allocator figure


def preload_path(name: str) -> str | None:
    for folder in LIB_DIRS:
        path = Path(folder) / PRELOADS[name]
        if path.exists():
            return str(path)
    return None


def _worker(allocator: str, model_id: str, impl: str, threads: int, batch_sizes: Sequence[int]) -> int:
    """Build, warm up, say ``ready <allocator label>``, then answer each batch size read from stdin with seconds."""
    import resource
    import time

    import torch

    from cc_models.runtime import tune_cpu

    # Only the allocator differs between workers: threads and denormals are set the same way in all.
    state = tune_cpu(threads, allocator=allocator in ("tuned", "thresholds"), huge_pages=allocator in HUGE_PAGES)
    import cc_models

    torch.manual_seed(0)
    model = cc_models.from_index(model_id).eval()
    if impl == "ours":
        model.fuse()
    else:
        import timm

        theirs = timm.create_model(model_id).eval()
        theirs.load_state_dict(model.state_dict())
        model = theirs
    model = model.to(memory_format=torch.channels_last)
    size = cc_models.data_config(model_id).input_size
    inputs = {bs: torch.randn(bs, *size).contiguous(memory_format=torch.channels_last) for bs in batch_sizes}
    with torch.inference_mode():
        for x in inputs.values():
            model(x)
            model(x)
        print(f"ready {state.allocator}", flush=True)
        for line in sys.stdin:
            x = inputs[int(line)]
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt  # all threads of the process
            t0 = time.perf_counter()
            model(x)
            seconds = time.perf_counter() - t0
            print(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults, flush=True)
    return EXIT_OK


class Worker:
    def __init__(self, allocator: str, model_id: str, impl: str, threads: int, batch_sizes: Sequence[int]) -> None:
        env = dict(os.environ)
        env.pop(THP_ENV, None)  # a parent that ran tune_cpu has it set; each worker's setting decides
        if allocator in PRELOADS:
            env["LD_PRELOAD"] = preload_path(allocator)
        cmd = [sys.executable, "-m", "bench.allocator", "--worker", allocator, model_id, "--impl", impl,
               "--threads", str(threads), "--batch-sizes", ",".join(map(str, batch_sizes))]
        self.name = allocator
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.label = ""

    def wait_ready(self) -> None:
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            raise RuntimeError(f"worker {self.name} failed to start (exit {self.proc.wait()})")
        self.label = line.split(" ", 1)[1].strip()

    def time(self, batch_size: int) -> tuple[float, int]:
        """Seconds for one batch and the minor page faults it took."""
        self.proc.stdin.write(f"{batch_size}\n")
        self.proc.stdin.flush()
        seconds, faults = self.proc.stdout.readline().split()
        return float(seconds), int(faults)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def compare_allocators(model_id: str, impl: str, allocators: Sequence[str], threads: int,
                       batch_sizes: Sequence[int], repeats: int) -> dict[int, dict[str, list[tuple[float, int]]]]:
    """(seconds, page faults) per batch, ``{batch size: {allocator: [runs]}}``, interleaved across worker
    processes."""
    workers = [Worker(a, model_id, impl, threads, batch_sizes) for a in allocators]
    try:
        for w in workers:
            w.wait_ready()
        times: dict[int, dict[str, list[tuple[float, int]]]] = {bs: {w.label: [] for w in workers}
                                                                for bs in batch_sizes}
        order = random.Random(0)
        for _ in range(repeats):
            for bs in batch_sizes:
                for w in order.sample(workers, len(workers)):
                    times[bs][w.label].append(w.time(bs))
        return times
    finally:
        for w in workers:
            w.close()


def report(model_id: str, impl: str, batch_size: int, times: dict[str, list[tuple[float, int]]]) -> str:
    ips = {label: batch_size / statistics.median(s for s, _ in t) for label, t in times.items()}
    base = next(iter(ips.values()))  # the first allocator given (default)
    cells = []
    for label, t in times.items():
        runs = sorted(batch_size / s for s, _ in t)
        faults = statistics.median(f for _, f in t)
        cells.append(f"{label} {ips[label]:.1f} img/s [{runs[0]:.1f}-{runs[-1]:.1f}] {ips[label] / base:.2f}x "
                     f"{faults:.0f} faults/batch")
    return f"{model_id} {impl} bs={batch_size}: " + "; ".join(cells)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.allocator", description=__doc__.split("\n\n")[0])
    p.add_argument("ids", nargs="*", metavar="ID", help="model ids (default: the three index variants)")
    p.add_argument("--impl", default="ours", help="comma-separated: ours (fused + channels_last), timm (channels_last)")
    p.add_argument("--allocators", default="default,tuned", help="comma-separated: default, thresholds, tuned, "
                   "jemalloc, tcmalloc (ratios are against the first)")
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        if min(batch_sizes) < 1 or args.threads < 1 or args.repeats < 1:
            raise ValueError
    except ValueError:
        print(f"{p.prog}: --batch-sizes takes positive integers (e.g. 1,32); --threads and --repeats >= 1",
              file=sys.stderr)
        return EXIT_USAGE
    impls = args.impl.split(",")
    allocators = args.allocators.split(",")
    bad = [i for i in impls if i not in ("ours", "timm")] + [a for a in allocators
                                                             if a not in ALLOCATORS]
    if bad:
        print(f"{p.prog}: unknown --impl/--allocators value(s): {', '.join(bad)}", file=sys.stderr)
        return EXIT_USAGE
    missing = [a for a in allocators if a in PRELOADS and preload_path(a) is None]
    if missing:
        print(f"{p.prog}: {', '.join(missing)} not installed (Debian: apt-get install libjemalloc2 "
              "libtcmalloc-minimal4)", file=sys.stderr)
        return EXIT_USAGE
    if args.worker:
        return _worker(args.worker, args.ids[0], impls[0], args.threads, batch_sizes)
    import cc_models

    ids = args.ids or cc_models.list_models()
    unknown = [i for i in ids if i not in cc_models.list_models()]
    if unknown:
        print(f"{p.prog}: unknown model id(s): {', '.join(unknown)}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.threads} threads, fp32, median of {args.repeats} interleaved runs [range]; ratio to "
          f"{allocators[0]} (target for ours, tuned: >= {TARGET_TUNED_VS_DEFAULT}x)", flush=True)
    for model_id in ids:
        for impl in impls:
            times = compare_allocators(model_id, impl, allocators, args.threads, batch_sizes, args.repeats)
            for bs in batch_sizes:
                print(report(model_id, impl, bs, times[bs]), flush=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
