"""What the standalone A/B scripts (``python -m bench.huge_pages``, ``python -m bench.expert_bound``) share: their
options, checked as usage errors, and the shuffled interleaved rounds they time in."""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from typing import Callable

EXIT_USAGE = 2


def add_options(p: argparse.ArgumentParser, batch_sizes: str) -> None:
    p.add_argument("ids", nargs="*", metavar="ID", help="model ids (default: the three index variants)")
    p.add_argument("--batch-sizes", default=batch_sizes)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)


def checked(p: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list[int], list[str]] | None:
    """(batch sizes, model ids) from ``add_options``' options, or None after printing the usage error."""
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        if min(batch_sizes) < 1 or args.rounds < 1 or args.threads < 1:
            raise ValueError
    except ValueError:
        print(f"{p.prog}: --batch-sizes takes positive integers (e.g. 1,32); --rounds and --threads >= 1",
              file=sys.stderr)
        return None
    import cc_models

    unknown = [i for i in args.ids if i not in cc_models.list_models()]
    if unknown:
        print(f"{p.prog}: unknown model id(s): {', '.join(unknown)}", file=sys.stderr)
        return None
    return batch_sizes, args.ids or cc_models.list_models()


# Untimed calls of a contender right before each of its timed calls: each is timed in its own cache state, as in a
# process serving one model, not in the state the previous contender left (a plain model whose weights fit the
# last-level cache ran up to 10% slower timed right after ours than back to back, at batch 1).
WARM_CALLS = 1


def median_seconds(contenders: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of each call over ``rounds`` rounds, each timing every contender once in a shuffled
    (seeded) order, each timed call right after ``WARM_CALLS`` untimed calls of the same contender."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    order = random.Random(0)
    for _ in range(rounds):
        for name in order.sample(list(contenders), len(contenders)):
            for _ in range(WARM_CALLS):
                contenders[name]()
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
