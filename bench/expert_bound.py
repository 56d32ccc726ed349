"""How close our CondConv model can come to our plain model at small batches, given the bytes of its experts.

    python -m bench.expert_bound [ID ...] [--batch-sizes 1] [--rounds 40] [--threads 2]

At batch 1 every expert of every CondConv layer is read once per pass, and nothing amortizes it: b0_8e holds
75 MB more parameters than plain B0. This bench times, interleaved in one process after ``tune_cpu`` (fp32,
channels_last, inference mode): our fused model, our plain model (the same builder with one expert), and the
plain model followed by one read (a sum) of a buffer as large as the extra parameters, in huge pages as the
kernels' expert layouts are. That read, in the cache state a forward pass leaves, is what the experts cost at the
least if reading them were all they cost and it overlapped nothing: ``plain / (plain + read)``, the no-overlap
estimate of ``ours / plain``. It is not a bound: the kernels' reads can overlap their own compute (ours ran
0.33-1.10 ms per batch inside plain + read at batch 1 on the 2-core Xeon). It prints both, the read's rate, and
what ours spends beyond plain and the read (negative: inside it).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Sequence

import torch

from bench import rounds

EXIT_OK = 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.expert_bound", description=__doc__.split("\n\n")[0])
    rounds.add_options(p, batch_sizes="1")
    args = p.parse_args(argv)
    checked = rounds.checked(p, args)
    if checked is None:
        return rounds.EXIT_USAGE
    batch_sizes, ids = checked
    import cc_models
    from cc_models import hugepages
    from cc_models.runtime import tune_cpu

    state = tune_cpu(args.threads)
    print(f"{state.threads} threads, fp32, channels_last, {state.allocator}; median of {args.rounds} interleaved "
          "rounds", flush=True)
    for model_id in ids:
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
                t = rounds.median_seconds({"ours": lambda: ours(x), "plain": lambda: plain(x),
                                           "plain+read": plain_then_read}, args.rounds)
            t_read = statistics.median(read)
            beyond = t["ours"] - t["plain"] - t_read
            print(f"{model_id} bs={bs}: {extra * 4 / 1e6:.1f} MB more parameters than plain, read in "
                  f"{t_read * 1e3:.2f} ms ({extra * 4 / t_read / 1e9:.1f} GB/s); ours {t['ours'] * 1e3:.2f} ms, "
                  f"plain {t['plain'] * 1e3:.2f} ms; ours / plain {t['plain'] / t['ours']:.3f}, no-overlap "
                  f"estimate plain / (plain + read) {t['plain'] / (t['plain'] + t_read):.3f}; ours beyond plain + read "
                  f"{beyond * 1e3:+.2f} ms per batch", flush=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
