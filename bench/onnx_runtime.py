"""ONNX Runtime as a contender in ``cc-bench compare``: our model exported by ``cc_models.export_onnx``,
served by ONNX Runtime's CPUExecutionProvider with the same number of threads as torch.

The export runs in a child process (``python -m bench.onnx_runtime ID OUT``), never in the timing
process: a failed TorchScript export once moved glibc's dynamic mmap threshold in the process that
attempted it and sped up every timing after it, so an export must not share the allocator being
measured. The child builds the same weights as the comparison (``compare.paired_models``'s rule: the same
checkpoint, else the same seed); the parent checks ONNX Runtime's logits against our model within 1e-4
before timing it, and leaves it out (saying why) when they differ or onnxruntime is not installed.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import torch

TOLERANCE = 1e-4


class OnnxRuntimeContender:
    """One exported model in an ONNX Runtime session."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # ORT's workers otherwise busy-wait after each run, taking the cores from the next contender timed.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def runner(self, x: torch.Tensor) -> Callable[[], object]:
        array = x.contiguous().numpy()  # NCHW, as the graph takes it
        return lambda: self.session.run(None, {"input": array})

    def max_abs_diff(self, model: torch.nn.Module, x: torch.Tensor) -> float:
        with torch.inference_mode():
            expected = model(x).numpy()
        return float(abs(self.runner(x)()[0] - expected).max())


def prepare(entry, index_path: str | None, checkpoint_dir: Path | None, ours: torch.nn.Module,
            log: Callable[[str], None]) -> OnnxRuntimeContender | None:
    """Export ``entry`` in a child process and load it into ONNX Runtime; None (logged) when it cannot take part."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        log(f"{entry.id}: ONNX Runtime left out: onnx/onnxruntime not installed (pip install 'cc-hub[onnx]')")
        return None
    folder = Path(tempfile.mkdtemp(prefix="cc-onnx-"))
    path = folder / f"{entry.id}.onnx"
    cmd = [sys.executable, "-m", "bench.onnx_runtime", entry.id, str(path)]
    if index_path:
        cmd += ["--index", str(index_path)]
    if checkpoint_dir:
        cmd += ["--checkpoint-dir", str(checkpoint_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        log(f"{entry.id}: ONNX Runtime left out: the export failed: {proc.stderr.strip()[-300:]}")
        return None
    contender = OnnxRuntimeContender(path, torch.get_num_threads())
    x = torch.randn(3, *entry.data.input_size, generator=torch.Generator().manual_seed(2))
    diff = contender.max_abs_diff(ours, x)
    if not diff <= TOLERANCE:
        log(f"{entry.id}: ONNX Runtime left out: its outputs differ from ours by {diff:.2e} (> {TOLERANCE:g})")
        return None
    log(f"{entry.id}: ONNX Runtime agrees with ours (max |diff| {diff:.2e}); exported in a child process")
    return contender


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.onnx_runtime",
                                     description="Export the weights `cc-bench compare` uses to ONNX (child process).")
    parser.add_argument("id")
    parser.add_argument("out", type=Path)
    parser.add_argument("--index", default=None)
    parser.add_argument("--checkpoint-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0, help="compare.paired_models' seed for random weights")
    args = parser.parse_args(argv)
    import cc_models
    import registry

    from . import models
    from .calibrate import randomize_

    index = registry.load(args.index)
    entry = index.get(args.id)
    # The weights compare.paired_models gives ours (same checkpoint, else the same seed); the parent checks
    # the export against its own model before timing, so a divergence here cannot go unnoticed.
    checkpoint = models.local_checkpoint(entry, args.checkpoint_dir)
    if checkpoint is not None:
        ours = cc_models.from_index(entry.id, checkpoint_path=checkpoint, index=index)
    else:
        torch.manual_seed(args.seed)
        ours = randomize_(cc_models.from_index(entry.id, index=index), seed=args.seed, size=entry.data.input_size[1:])
    cc_models.export_onnx(ours.eval(), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
