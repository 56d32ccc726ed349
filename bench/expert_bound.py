"""How close our CondConv model can come to our plain model at small batches, given the bytes of its experts.

    python -m bench.expert_bound [ID ...] [--batch-sizes 1] [--rounds 40] [--threads 2]

At batch 1 every expert of every CondConv layer is read once per pass, and nothing amortizes it: b0_8e holds
75 MB more parameters than plain B0. This bench times, interleaved in one process after ``tune_cpu`` (fp32,
channels_last, inference mode): our fused model, our plain model (the same builder with one expert), and the
plain model followed by one read (a sum) of a buffer as large as the extra parameters, in huge pages as the
kernels' expert layouts are. That read, in the cache state a forward pass leaves, is what the experts cost at the
least if reading them were all they cost and it overlapped nothing: ``plain / (plain + read)`` bounds
``ours / plain`` from above in practice. It prints both, the read's rate, and what ours spends beyond plain and
the read (the mixing, routing and kernel overheads that work on the kernels can still remove).
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from typing import Sequence

import torch

EXIT_OK, EXIT_USAGE = 0, 2


def time_rounds(contenders: dict, rounds: int) -> dict[str, float]:
    """Median seconds of each zero-argument callable over ``rounds`` shuffled rounds."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    order = random.Random(0)
    for call in contenders.values():
        call()
    for _ in range(rounds):
        for name in order.sample(list(contenders), len(contenders)):
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.expert_bound", description=__doc__.split("\n\n")[0])
    p.add_argument("ids", nargs="*", metavar="ID", help="model ids (default: the three index variants)")
    p.add_argument("--batch-sizes", default="1")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        if min(batch_sizes) < 1 or args.rounds < 1 or args.threads < 1:
            raise ValueError
    except ValueError:
        print(f"{p.prog}: --batch-sizes takes positive integers (e.g. 1,8); --rounds and --threads >= 1",
              file=sys.stderr)
        return EXIT_USAGE
    import cc_models
    from cc_models import hugepages
    from cc_models.runtime import tune_cpu

    unknown = [i for i in args.ids if i not in cc_models.list_models()]
    if unknown:
        print(f"{p.prog}: unknown model id(s): {', '.join(unknown)}", file=sys.stderr)
        return EXIT_USAGE
    state = tune_cpu(args.threads)
    print(f"{state.threads} threads, fp32, channels_last, {state.allocator}; median of {args.rounds} interleaved "
          "rounds", flush=True)
    for model_id in args.ids or cc_models.list_models():
        torch.manual_seed(0)
        ours = cc_models.from_index(model_id).eval().fuse().to(memory_format=torch.channels_last)
        plain = cc_models.from_index(model_id, experts_multiplier=0).eval().fuse().to(
            memory_format=torch.channels_last)
        extra = sum(p.numel() for p in ours.parameters()) - sum(p.numel() for p in plain.parameters())
        experts = hugepages.zeros((extra,))
        experts.fill_(1.0)
        size = cc_models.data_config(model_id).input_size
        for bs in batch_sizes:
            x = torch.randn(bs, *size).contiguous(memory_format=torch.channels_last)
            read: list[float] = []

            def plain_then_read() -> None:
                plain(x)
                start = time.perf_counter()
                experts.sum()
                read.append(time.perf_counter() - start)

            with torch.inference_mode():
                t = time_rounds({"ours": lambda: ours(x), "plain": lambda: plain(x), "plain+read": plain_then_read},
                                args.rounds)
            t_read = statistics.median(read)
            beyond = t["ours"] - t["plain"] - t_read
            print(f"{model_id} bs={bs}: {extra * 4 / 1e6:.1f} MB more parameters than plain, read in "
                  f"{t_read * 1e3:.2f} ms ({extra * 4 / t_read / 1e9:.1f} GB/s); ours {t['ours'] * 1e3:.2f} ms, "
                  f"plain {t['plain'] * 1e3:.2f} ms; ours / plain {t['plain'] / t['ours']:.3f}, bound "
                  f"plain / (plain + read) {t['plain'] / (t['plain'] + t_read):.3f}; ours beyond plain + read "
                  f"{beyond * 1e3:+.2f} ms per batch", flush=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
