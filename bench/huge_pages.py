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
import functools
import os
import sys
from typing import Sequence
from unittest import mock

import torch

from bench import rounds

EXIT_OK, EXIT_UNAVAILABLE = 0, 3


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
        with mock.patch.dict(os.environ, {hugepages.ENV_SWITCH: "0"}):
            got = ordinary(x)  # builds its own, in torch's memory
        plain(x)
    if not torch.equal(want, got):
        raise RuntimeError(f"{model_id}: the copies disagree ({(want - got).abs().max().item():.3g}); not timed")
    return {"huge": huge, "ordinary": ordinary, "plain": plain}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.huge_pages", description=__doc__.split("\n\n")[0])
    rounds.add_options(p, batch_sizes="1,32")
    args = p.parse_args(argv)
    checked = rounds.checked(p, args)
    if checked is None:
        return rounds.EXIT_USAGE
    batch_sizes, ids = checked
    import cc_models
    from cc_models import cpu_kernels, hugepages
    from cc_models.runtime import tune_cpu

    if not cpu_kernels.available() or not hugepages.available():
        why = ((cpu_kernels.failure() or "the C++ kernels are off") if not cpu_kernels.available()
               else f"no transparent huge pages here ({hugepages.THP_SETTING})")
        print(f"{p.prog}: nothing to compare: {why}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    state = tune_cpu(args.threads, huge_pages=False)
    print(f"{state.threads} threads, fp32, channels_last, {state.allocator}; median of {args.rounds} interleaved "
          "rounds", flush=True)
    for model_id in ids:
        models = build(model_id, batch_sizes)
        total = sum(t.numel() * t.element_size() for t in layouts(models["huge"]))
        huge, ordinary = (sum(min(hugepages.huge_bytes(t), t.numel() * t.element_size()) for t in layouts(models[name]))
                          for name in ("huge", "ordinary"))
        print(f"{model_id}: layouts {total / 2**20:.1f} MiB, in huge pages {huge / 2**20:.1f} MiB of the huge copy's "
              f"and {ordinary / 2**20:.1f} MiB of the ordinary copy's", flush=True)
        size = cc_models.data_config(model_id).input_size
        for bs in batch_sizes:
            x = torch.randn(bs, *size).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                t = rounds.median_seconds({name: functools.partial(model, x) for name, model in models.items()},
                                          args.rounds)
            ips = {name: bs / seconds for name, seconds in t.items()}
            print(f"  bs={bs}: huge {ips['huge']:.1f} img/s, ordinary {ips['ordinary']:.1f}, plain {ips['plain']:.1f}; "
                  f"huge / ordinary {t['ordinary'] / t['huge']:.3f}; / plain: huge {t['plain'] / t['huge']:.3f}, "
                  f"ordinary {t['plain'] / t['ordinary']:.3f}", flush=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
