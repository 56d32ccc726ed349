"""How close our CondConv model can come to our plain model at small batches, given the bytes of its experts.

    python -m bench.expert_bound [ID ...] [--batch-sizes 1] [--rounds 40] [--threads 2] [--split]

At batch 1 every expert of every CondConv layer is read once per pass, and nothing amortizes it: b0_8e holds
75 MB more parameters than plain B0. This bench times, interleaved in one process after ``tune_cpu`` (fp32,
channels_last, inference mode): our fused model, our plain model (the same builder with one expert), and the
plain model followed by one read (a sum) of a buffer as large as the extra parameters, in huge pages as the
kernels' expert layouts are. That read, in the cache state a forward pass leaves, is what the experts cost at the
least if reading them were all they cost and it overlapped nothing: ``plain / (plain + read)``, the no-overlap
estimate of ``ours / plain``. It is not a bound: the kernels' reads can overlap their own compute. It prints both, the read's
rate, and what ours spends beyond plain and the read (negative: inside it). Each timed call comes right after an
untimed call of the same contender (``rounds.WARM_CALLS``); the read is timed in the state that plain's pass and
the untimed call's read leave.

``--split`` (AVX-512 builds) also times ours with the pointwise CondConvs' mixes left out, with their GEMMs left
out, and with both (``cpu_kernels.timing_build``), in the same rounds, and prints what each part costs inside the
whole pass, the rate at which the mixes read the expert panels, and how much of the two parts overlaps. On the
2-core Xeon (b0_8e, batch 1) the mixes cost 5.2 ms (83 MB at 16 GB/s), the GEMMs 2.0 ms, and 0.55 ms of
them overlapped.
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
    p.add_argument("--split", action="store_true",
                   help="also time ours without the pointwise mixes, without their GEMMs, and without both")
    args = p.parse_args(argv)
    checked = rounds.checked(p, args)
    if checked is None:
        return rounds.EXIT_USAGE
    batch_sizes, ids = checked
    import cc_models
    from cc_models import cpu_kernels, hugepages
    from cc_models.runtime import tune_cpu

    why = cpu_kernels.why_no_pointwise() if args.split else None
    if why is not None:
        print(f"{p.prog}: --split: {why}", file=sys.stderr)
        return rounds.EXIT_USAGE
    state = tune_cpu(args.threads)
    skips = ({name: cpu_kernels.timing_build(*parts) for name, parts in
              (("no mixes", ("mix",)), ("no GEMMs", ("gemm",)), ("neither", ("mix", "gemm")))}
             if args.split else {})
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

            contenders = {"ours": lambda: ours(x), "plain": lambda: plain(x), "plain+read": plain_then_read}
            contenders |= {name: without(op, ours, x) for name, op in skips.items()}
            with torch.inference_mode():
                t = rounds.median_seconds(contenders, args.rounds)
            t_read = statistics.median(read[rounds.WARM_CALLS::rounds.WARM_CALLS + 1])  # the timed calls' reads
            beyond = t["ours"] - t["plain"] - t_read
            print(f"{model_id} bs={bs}: {extra * 4 / 1e6:.1f} MB more parameters than plain, read in "
                  f"{t_read * 1e3:.2f} ms ({extra * 4 / t_read / 1e9:.1f} GB/s); ours {t['ours'] * 1e3:.2f} ms, "
                  f"plain {t['plain'] * 1e3:.2f} ms; ours / plain {t['plain'] / t['ours']:.3f}, no-overlap "
                  f"estimate plain / (plain + read) {t['plain'] / (t['plain'] + t_read):.3f}; ours beyond plain + read "
                  f"{beyond * 1e3:+.2f} ms per batch", flush=True)
            if skips:
                print("  " + split_line(t, panel_bytes(ours)), flush=True)
    return EXIT_OK


def without(op, model, x):
    """A call of ``model`` on ``x`` whose pointwise CondConvs run timing build ``op``."""
    from cc_models import cpu_kernels

    def call():
        with cpu_kernels.pointwise_op(op):
            return model(x)
    return call


def panel_bytes(model) -> int:
    """Bytes of the pointwise CondConvs' expert panels (the layout the mixes read, zero-padded to whole panels);
    ``--split`` has checked that the pointwise kernel runs here."""
    from cc_models import cpu_kernels
    from cc_models.layers.cond_conv2d import CondConv2d

    return sum(cpu_kernels._experts_panels(m).numel() * 4 for m in model.modules()
               if isinstance(m, CondConv2d) and m.pointwise)


def split_line(t: dict[str, float], panels: int) -> str:
    """What the pointwise CondConvs' mixes and GEMMs cost inside the pass, from ``--split``'s timings (seconds)."""
    mix, gemm = t["no GEMMs"] - t["neither"], t["no mixes"] - t["neither"]
    both = t["ours"] - t["neither"]
    rate = f" ({panels / 1e6:.0f} MB of expert panels at {panels / mix / 1e9:.1f} GB/s)" if mix > 0 else ""
    return (f"pointwise CondConvs: mixes {mix * 1e3:.2f} ms{rate}, GEMMs {gemm * 1e3:.2f} ms, both {both * 1e3:.2f} "
            f"ms (overlap {(mix + gemm - both) * 1e3:+.2f} ms); the rest of the pass {t['neither'] * 1e3:.2f} ms")


if __name__ == "__main__":
    sys.exit(main())
