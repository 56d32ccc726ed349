"""Time our fused model with its CPU kernels' expert layouts in 2 MiB pages against the same model with them in
ordinary 4 KiB pages, and our plain model (one expert) beside both: interleaved in one process.

    python -m bench.huge_pages [ID ...] [--batch-sizes 1,32] [--rounds 40] [--threads 2]

The two CondConv copies share their weights; only where ``cc_models.hugepages`` put the layouts differs
(``CC_MODELS_HUGE_PAGES=0`` while the ordinary copy builds its own, in torch's memory). ``tune_cpu`` runs without
its huge pages for torch's blocks (``huge_pages=False``), so the ordinary copy's layouts are in 4 KiB pages:
with them, torch's allocator would put its large blocks (these layouts too, where its heap memory is fresh) in
huge pages as well. Each round times one batch of each
contender in a shuffled order, after ``tune_cpu`` (fp32, channels_last, inference mode). It prints the median
images/s, huge / ordinary, and each CondConv copy's ratio to the plain model (the issue's CondConv overhead),
with how much of the layouts the kernel did put in huge pages (``AnonHugePages`` of their mappings).
"""
from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import sys
import time
from typing import Sequence

import torch

EXIT_OK, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 2, 3


def layouts(model: torch.nn.Module) -> list[torch.Tensor]:
    """The expert layouts ``cpu_kernels`` built for ``model``'s layers."""
    from cc_models import cpu_kernels

    return [tensor for module in model.modules() for _, tensor in cpu_kernels._layouts.get(module, {}).values()]


def build(model_id: str, batch_sizes: Sequence[int]) -> dict[str, torch.nn.Module]:
    import cc_models
    from cc_models import hugepages

    torch.manual_seed(0)
    huge = cc_models.from_index(model_id).eval().fuse().to(memory_format=torch.channels_last)
    ordinary = copy.deepcopy(huge)
    plain = cc_models.from_index(model_id, experts_multiplier=0).eval().fuse().to(memory_format=torch.channels_last)
    size = cc_models.data_config(model_id).input_size
    x = torch.randn(max(batch_sizes), *size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want = huge(x)  # builds the layouts, in huge pages
        previous = os.environ.get(hugepages.ENV_SWITCH)
        os.environ[hugepages.ENV_SWITCH] = "0"
        try:
            got = ordinary(x)
        finally:
            if previous is None:
                del os.environ[hugepages.ENV_SWITCH]
            else:
                os.environ[hugepages.ENV_SWITCH] = previous
        plain(x)
    if not torch.equal(want, got):
        raise RuntimeError(f"{model_id}: the copies disagree ({(want - got).abs().max().item():.3g}); not timed")
    return {"huge": huge, "ordinary": ordinary, "plain": plain}


def time_rounds(models: dict[str, torch.nn.Module], x: torch.Tensor, rounds: int) -> dict[str, float]:
    """Median seconds per batch of each model over ``rounds`` shuffled rounds."""
    times: dict[str, list[float]] = {name: [] for name in models}
    order = random.Random(0)
    with torch.inference_mode():
        for model in models.values():
            model(x)
        for _ in range(rounds):
            for name in order.sample(list(models), len(models)):
                start = time.perf_counter()
                models[name](x)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.huge_pages", description=__doc__.split("\n\n")[0])
    p.add_argument("ids", nargs="*", metavar="ID", help="model ids (default: the three index variants)")
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        if min(batch_sizes) < 1 or args.rounds < 1 or args.threads < 1:
            raise ValueError
    except ValueError:
        print(f"{p.prog}: --batch-sizes takes positive integers (e.g. 1,32); --rounds and --threads >= 1",
              file=sys.stderr)
        return EXIT_USAGE
    import cc_models
    from cc_models import cpu_kernels, hugepages
    from cc_models.runtime import tune_cpu

    unknown = [i for i in args.ids if i not in cc_models.list_models()]
    if unknown:
        print(f"{p.prog}: unknown model id(s): {', '.join(unknown)}", file=sys.stderr)
        return EXIT_USAGE
    if not cpu_kernels.available() or not hugepages.available():
        why = cpu_kernels.failure() or "the C++ kernels are off" if not cpu_kernels.available() else \
            f"no transparent huge pages here ({hugepages.THP_SETTING})"
        print(f"{p.prog}: nothing to compare: {why}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    state = tune_cpu(args.threads, huge_pages=False)
    print(f"{state.threads} threads, fp32, channels_last, {state.allocator}; median of {args.rounds} interleaved "
          "rounds", flush=True)
    for model_id in args.ids or cc_models.list_models():
        models = build(model_id, batch_sizes)
        total = sum(t.numel() * t.element_size() for t in layouts(models["huge"]))
        huge, ordinary = (sum(min(hugepages.huge_bytes(t), t.numel() * t.element_size()) for t in layouts(models[name]))
                          for name in ("huge", "ordinary"))
        print(f"{model_id}: layouts {total / 2**20:.1f} MiB, in huge pages {huge / 2**20:.1f} MiB of the huge copy's "
              f"and {ordinary / 2**20:.1f} MiB of the ordinary copy's", flush=True)
        size = cc_models.data_config(model_id).input_size
        for bs in batch_sizes:
            x = torch.randn(bs, *size).contiguous(memory_format=torch.channels_last)
            t = time_rounds(models, x, args.rounds)
            ips = {name: bs / seconds for name, seconds in t.items()}
            print(f"  bs={bs}: huge {ips['huge']:.1f} img/s, ordinary {ips['ordinary']:.1f}, plain {ips['plain']:.1f}; "
                  f"huge / ordinary {t['ordinary'] / t['huge']:.3f}; / plain: huge {t['plain'] / t['huge']:.3f}, "
                  f"ordinary {t['plain'] / t['ordinary']:.3f}", flush=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
