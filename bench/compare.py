"""Ours against timm: the same weights, side by side in one process.

    cc-bench compare --against timm [ID ...] [--batch-sizes 1 32] [--repeats 7] [--compile]

For each variant it builds our model and timm's, gives both the same weights
(the entry's checkpoint from ``--checkpoint-dir`` when there, else calibrated
random ones, see ``bench.calibrate``), checks that their outputs agree within
1e-4 -- unfused, fused (BatchNorm folded) and channels_last -- and only then
times them, interleaved (each repeat runs every model once, in rotating
order), same threads and dtype, warm-up, median. timm's plain EfficientNet of
the same size (no CondConv) runs alongside as the reference the CondConv
overhead is measured against. Peak memory is each model's own child process's
peak resident set (build + one forward at the batch size), measured the same
way for both.

Ours runs in its inference form (``model.eval().fuse()``, channels_last);
timm's as ``timm.create_model`` returns it, with the input layout its
benchmark script uses (NCHW on CPU; AMP + channels_last on CUDA).

On CUDA (``--device cuda``): the parity check is repeated there in fp32 with
TF32 off (ours through the Triton kernels); each AMP dtype is timed at batch
256, all three eager, and at batch 1 with ours as a CUDA graph
(``cc_models.cuda_graph``) against timm and the plain model eager. Peak memory
is ``torch.cuda.max_memory_allocated`` of one forward (ours at batch 1: of the
graph's capture) plus the model's own parameters and buffers.

timm is optional: without it the command says so and exits 2. Results go to
the bench's results store (check ``compare``); ``cc-bench publish`` puts them on
the docs' results page.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from . import throughput
from .options import UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
TOLERANCE = 1e-4
# The issue's targets, printed beside the figures (not asserted anywhere).
TARGETS_CPU = {1: 1.2, 32: 1.7}
TARGETS_GPU = {1: 4.0, 256: 5.0}  # batch 1: ours as a CUDA graph vs timm eager; 256: both eager
TARGET_VS_PLAIN_GPU = 0.95
DESCRIPTION = ("Build our model and timm's with the same weights, check their outputs agree within 1e-4 (unfused, "
               "fused, channels_last), then time them interleaved in one process with timm's plain EfficientNet as "
               "the no-CondConv reference; report images/s, ratios and peak memory. Needs timm (exit 2 without it). "
               "Defaults: --warmup 2, --repeats 7.")


class CompareError(Exception):
    """The comparison cannot be trusted (outputs disagree) or cannot run."""


@dataclass
class Row:
    model_id: str
    batch_size: int
    dtype: str
    ours: float
    timm: float
    plain: float | None
    plain_id: str | None
    ratio: float
    ratio_vs_plain: float | None
    times_ours: list[float] = field(default_factory=list)
    times_timm: list[float] = field(default_factory=list)
    peak_rss_ours_mib: float | None = None
    peak_rss_timm_mib: float | None = None
    compiled: dict | None = None
    onnxruntime: float | None = None  # ONNX Runtime (CPU) serving our exported model, img/s
    ours_form: str = "fused + channels_last"
    peak_cuda_ours_mib: float | None = None  # torch.cuda.max_memory_allocated of one forward (or graph capture)
    peak_cuda_timm_mib: float | None = None


def plain_reference(model_id: str) -> str | None:
    """timm's EfficientNet of the same size without CondConv: tf_efficientnet_cc_b0_4e -> tf_efficientnet_b0."""
    match = re.fullmatch(r"(.*efficientnet)_cc_(b\d)_\d+e", model_id)
    return f"{match[1]}_{match[2]}" if match else None


def _import_timm():
    try:
        import timm
    except ImportError:
        return None
    return timm


def paired_models(entry, index, checkpoint_dir: Path | None, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """Our model and timm's, eval mode, with identical weights (checkpoint, else calibrated random)."""
    import cc_models
    import timm

    from . import models
    from .calibrate import randomize_

    checkpoint = models.local_checkpoint(entry, checkpoint_dir)
    if checkpoint is not None:
        ours = cc_models.from_index(entry.id, checkpoint_path=checkpoint, index=index)
    else:
        torch.manual_seed(seed)
        ours = randomize_(cc_models.from_index(entry.id, index=index), seed=seed, size=entry.data.input_size[1:])
    ours.eval()
    theirs = timm.create_model(entry.id, pretrained=False, num_classes=ours.num_classes).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


def inference_form(model: nn.Module, device: str) -> nn.Module:
    """Ours as a user runs it for inference: fused, channels_last, on ``device`` (on CUDA, the SiLUs after the
    CondConvs in the Triton kernels' epilogue)."""
    model = model.fuse().to(device=device, memory_format=torch.channels_last)
    if device == "cuda":
        from cc_models.kernels import fold_activations_

        fold_activations_(model)
    return model


def peak_cuda_mib(fn: Callable[[], object], model: nn.Module) -> float:
    """Peak CUDA memory of a process holding only ``model`` while ``fn`` runs: its parameters and buffers plus
    the most ``fn`` allocated above what was allocated before it (torch.cuda.max_memory_allocated)."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    own = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    return (torch.cuda.max_memory_allocated() - before + own) / 2**20


def check_parity(ours: nn.Module, theirs: nn.Module, input_size: tuple[int, int, int]) -> dict[str, float]:
    """Max |ours - timm| of the logits for each code path timed; raises CompareError beyond 1e-4.

    Fuses ``ours`` in place on the way (the timed form).
    """
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, *input_size, generator=g)
    diffs = {}
    with torch.inference_mode():
        ref = theirs(x)
        diffs["unfused"] = (ours(x) - ref).abs().max().item()
        inference_form(ours, "cpu")
        diffs["fused"] = (ours(x) - ref).abs().max().item()
        diffs["fused_channels_last"] = (ours(x.contiguous(memory_format=torch.channels_last)) - ref).abs().max().item()
    scale = ref.abs().max().item()
    bad = {k: v for k, v in diffs.items() if not v <= TOLERANCE}
    if bad:
        raise CompareError(f"outputs differ from timm's beyond {TOLERANCE:g}: {bad} (logits up to {scale:.3g}); "
                           "timing would compare different computations")
    return {**diffs, "logit_scale": scale}


def check_cuda_parity(ours: nn.Module, theirs: nn.Module, input_size: tuple[int, int, int]) -> float:
    """Max |ours - timm| of the logits on CUDA in fp32 with TF32 off (ours through the Triton kernels)."""
    x = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(1)).cuda()
    matmul_tf32, cudnn_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.inference_mode():
            diff = (ours(x.contiguous(memory_format=torch.channels_last)) - theirs(x)).abs().max().item()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul_tf32, cudnn_tf32
    if not diff <= TOLERANCE:
        raise CompareError(f"on CUDA (fp32, TF32 off) outputs differ from timm's by {diff:.3g} > {TOLERANCE:g}; "
                           "timing would compare different computations")
    return diff


def time_interleaved(runners: dict[str, Callable[[], object]], *, warmup: int, repeats: int, device: str,
                     autocast: contextlib.AbstractContextManager | None = None) -> dict[str, list[float]]:
    """Seconds per call of each runner; every repeat runs each once, the order rotating per repeat."""
    timer = throughput.timer(device)
    names = list(runners)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode(), (autocast or contextlib.nullcontext()):
        for _ in range(warmup):
            for n in names:
                runners[n]()
        if device == "cuda":
            torch.cuda.synchronize()
        for r in range(repeats):
            for n in names[r % len(names):] + names[:r % len(names)]:
                times[n].append(timer(runners[n]))
    return times


def peak_rss_mib(impl: str, model_id: str, batch_size: int, index: str | None) -> float | None:
    """Peak resident memory (MiB) of a child process that builds one model and runs one batch."""
    cmd = [sys.executable, "-m", "bench", "compare", "--memory-probe", impl, model_id, "--batch-sizes",
           str(batch_size), "--threads", str(torch.get_num_threads()), "--device", "cpu"]
    if index:
        cmd += ["--index", str(index)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        print(f"cc-bench compare: memory probe failed: {proc.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mib"]


def _memory_probe(impl: str, model_id: str, batch_size: int, index: str | None) -> int:
    import registry

    entry = registry.load(index).get(model_id)
    x = torch.randn(batch_size, *entry.data.input_size)
    if impl == "ours":
        import cc_models

        model = inference_form(cc_models.from_index(model_id, index=index).eval(), "cpu")
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        import timm

        model = timm.create_model(model_id, pretrained=False).eval()
    with torch.inference_mode():
        model(x)
    print(json.dumps({"peak_rss_mib": _peak_rss_kib() / 1024}))
    return EXIT_OK


def _peak_rss_kib() -> int:
    """This process's peak resident set in KiB.

    /proc's VmHWM belongs to the process's own address space; ``ru_maxrss`` would not
    do: Linux carries the parent's peak into a forked child, so every probe would
    report at least what the benchmark process itself had reached.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux; not exact, see above


def compare_variant(entry, index, args, device: str, log: Callable[[str], None]) -> tuple[list[Row], dict]:
    import timm

    ours, theirs = paired_models(entry, index, args.checkpoint_dir)
    parity = check_parity(ours, theirs, entry.data.input_size)
    log(f"{entry.id}: outputs agree with timm (max |diff| {max(parity[k] for k in ('unfused', 'fused', 'fused_channels_last')):.2e}, "
        f"logits up to {parity['logit_scale']:.2f})")
    ort = None
    if device == "cpu" and args.onnxruntime:  # exported in a child process, before anything here is timed
        from .onnx_runtime import prepare

        ort = prepare(entry, args.index, args.checkpoint_dir, ours, log)
    plain_id = plain_reference(entry.id)
    plain = timm.create_model(plain_id, pretrained=False).eval() if plain_id else None
    gpu = device == "cuda"
    ours = inference_form(ours, device)  # fused by check_parity already; this places it (and folds, on CUDA)
    theirs, plain = theirs.to(device), (plain.to(device) if plain is not None else None)
    if gpu:
        parity["cuda_fp32"] = check_cuda_parity(ours, theirs, entry.data.input_size)
        log(f"{entry.id}: on CUDA (fp32, TF32 off) outputs agree with timm (max |diff| {parity['cuda_fp32']:.2e})")
        # timm's benchmark script layout on GPU: AMP + channels_last for every model
        theirs = theirs.to(memory_format=torch.channels_last)
        plain = plain.to(memory_format=torch.channels_last) if plain is not None else None
    rows = []
    dtypes = args.gpu_dtypes if gpu else ("float32",)
    for dtype in dtypes:
        autocast = torch.autocast("cuda", dtype=getattr(torch, dtype)) if gpu else None
        for bs in args.batch_sizes:
            x = torch.randn(bs, *entry.data.input_size, device=device)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            x_timm = x_cl if gpu else x
            runners = {"ours": lambda: ours(x_cl), "timm": lambda: theirs(x_timm)}
            if plain is not None:
                runners["plain"] = lambda: plain(x_timm)
            if ort is not None:
                runners["onnxruntime"] = ort.runner(x)
            peaks = {}
            if gpu:
                peaks = cuda_forms(runners, ours, theirs, x_cl, autocast_dtype=getattr(torch, dtype))
            times = time_interleaved(runners, warmup=args.warmup, repeats=args.repeats, device=device,
                                     autocast=autocast)
            ips = {n: bs / statistics.median(t) for n, t in times.items()}
            row = Row(entry.id, bs, dtype + ("-amp" if gpu else ""), ips["ours"], ips["timm"], ips.get("plain"),
                      plain_id, ips["ours"] / ips["timm"], ips["ours"] / ips["plain"] if "plain" in ips else None,
                      [round(t, 6) for t in times["ours"]], [round(t, 6) for t in times["timm"]],
                      onnxruntime=ips.get("onnxruntime"), ours_form=peaks.get("form", "fused + channels_last"),
                      peak_cuda_ours_mib=peaks.get("ours"), peak_cuda_timm_mib=peaks.get("timm"))
            if args.memory and not gpu:
                row.peak_rss_ours_mib = peak_rss_mib("ours", entry.id, bs, args.index)
                row.peak_rss_timm_mib = peak_rss_mib("timm", entry.id, bs, args.index)
            if args.compile:
                row.compiled = compile_and_time(ours, theirs, x_cl, x_timm, args, device, autocast)
            log(format_row(row))
            rows.append(row)
    return rows, parity


def cuda_forms(runners: dict[str, Callable[[], object]], ours: nn.Module, theirs: nn.Module, x: torch.Tensor, *,
               autocast_dtype: torch.dtype) -> dict:
    """On CUDA at batch 1, replace ours by its CUDA-graph form (``cc_models.cuda_graph``; timm stays eager, as its
    users run it); measure each model's peak CUDA memory (ours: the graph's capture, which holds its memory)."""
    import cc_models

    out: dict = {"form": "fused + channels_last + Triton kernels"}
    with torch.inference_mode(), torch.autocast("cuda", dtype=autocast_dtype):
        out["timm"] = peak_cuda_mib(runners["timm"], theirs)
        if x.shape[0] == 1:
            box = {}
            out["ours"] = peak_cuda_mib(lambda: box.update(run=cc_models.cuda_graph(ours, x, autocast_dtype=autocast_dtype)),
                                        ours)
            runners["ours"] = lambda: box["run"](x)
            out["form"] += " + CUDA graph"
        else:
            out["ours"] = peak_cuda_mib(runners["ours"], ours)
    return out


def compile_and_time(ours, theirs, x_ours, x_timm, args, device, autocast) -> dict:
    """torch.compile both (fixed shapes), counting compile time, then time them the same way."""
    out = {}
    compiled = {}
    for name, model, x in (("ours", ours, x_ours), ("timm", theirs, x_timm)):
        fn = torch.compile(copy.deepcopy(model), dynamic=False)
        t0 = time.perf_counter()
        with torch.inference_mode(), (autocast or contextlib.nullcontext()):
            fn(x)
        out[f"compile_s_{name}"] = time.perf_counter() - t0
        compiled[name] = (lambda f=fn, x=x: f(x))
    times = time_interleaved(compiled, warmup=1, repeats=args.repeats, device=device, autocast=autocast)
    bs = x_ours.shape[0]
    for name, t in times.items():
        out[f"images_per_s_{name}"] = bs / statistics.median(t)
    out["ratio"] = out["images_per_s_ours"] / out["images_per_s_timm"]
    return out


def format_row(r: Row) -> str:
    target = (TARGETS_GPU if r.dtype.endswith("-amp") else TARGETS_CPU).get(r.batch_size)
    mark = "" if target is None else (" (target >= %.1fx: %s)" % (target, "met" if r.ratio >= target else "NOT met"))
    text = (f"{r.model_id} bs={r.batch_size} {r.dtype}: ours{' (CUDA graph)' if 'graph' in r.ours_form else ''} {r.ours:.2f} img/s, timm {r.timm:.2f} img/s, "
            f"ratio {r.ratio:.2f}x{mark}")
    if r.ratio_vs_plain is not None:
        text += f"; timm {r.plain_id} (no CondConv) {r.plain:.2f} img/s, ours/plain {r.ratio_vs_plain:.2f}x"
    if r.onnxruntime is not None:
        text += f"; ONNX Runtime {r.onnxruntime:.2f} img/s (ours/ORT {r.ours / r.onnxruntime:.2f}x)"
    if r.peak_cuda_ours_mib is not None and r.peak_cuda_timm_mib is not None:
        text += f"; peak CUDA memory ours {r.peak_cuda_ours_mib:.0f} MiB, timm {r.peak_cuda_timm_mib:.0f} MiB"
    if r.dtype.endswith("-amp") and r.ratio_vs_plain is not None:
        text += f" (ours/plain target >= {TARGET_VS_PLAIN_GPU}x: {'met' if r.ratio_vs_plain >= TARGET_VS_PLAIN_GPU else 'NOT met'})"
    if r.peak_rss_ours_mib is not None and r.peak_rss_timm_mib is not None:
        text += f"; peak RSS ours {r.peak_rss_ours_mib:.0f} MiB, timm {r.peak_rss_timm_mib:.0f} MiB"
    if r.compiled:
        c = r.compiled
        text += (f"; compiled: ours {c['images_per_s_ours']:.2f}, timm {c['images_per_s_timm']:.2f} img/s "
                 f"({c['ratio']:.2f}x; compile {c['compile_s_ours']:.0f} s / {c['compile_s_timm']:.0f} s)")
    return text


def store_rows(rows: Sequence[Row], parities: dict, args, environment: dict) -> Path:
    """One run in the results store, check ``compare``."""
    from registry import results_schema as schema

    from . import store

    checks = []
    for r in rows:
        common = dict(model_id=r.model_id, check=schema.COMPARE, batch_size=r.batch_size, dtype=r.dtype,
                      device=environment["device"], device_name=environment["device_name"],
                      fingerprint=environment["fingerprint_id"], threads=environment["threads"],
                      allocator=environment["allocator"], torch_version=environment["torch_version"],
                      status=schema.INFO, tolerance="", claimed=None)
        extra = {"parity_max_abs_diff": parities[r.model_id], "plain_reference": r.plain_id,
                 "times_s_ours": r.times_ours, "times_s_timm": r.times_timm, "repeats": args.repeats,
                 "warmup": args.warmup, "ours_form": r.ours_form, "compiled": r.compiled}
        metrics = [("images_per_s_ours", r.ours, "img/s"), ("images_per_s_timm", r.timm, "img/s"),
                   ("ratio", r.ratio, "x"), ("images_per_s_plain", r.plain, "img/s"),
                   ("ratio_vs_plain", r.ratio_vs_plain, "x"), ("peak_rss_ours", r.peak_rss_ours_mib, "MiB"),
                   ("peak_rss_timm", r.peak_rss_timm_mib, "MiB"), ("images_per_s_onnxruntime", r.onnxruntime, "img/s"),
                   ("peak_cuda_ours", r.peak_cuda_ours_mib, "MiB"), ("peak_cuda_timm", r.peak_cuda_timm_mib, "MiB")]
        for metric, value, unit in metrics:
            if value is None:
                continue
            checks.append({**common, "metric": metric, "measured": round(value, 4), "unit": unit,
                           "reason": format_row(r), "extra": extra})
    now = store.utc_now()
    record = {"format": schema.FORMAT, "run_id": store.new_run_id(now), "timestamp": store.iso(now),
              "finished": store.iso(store.utc_now()), "git_commit": environment["git_commit"],
              "environment": environment, "command": [args.prog, *args.argv],
              "index": str(args.index or "packaged"), "settings": {
                  "batch_sizes": list(args.batch_sizes), "repeats": args.repeats, "warmup": args.warmup,
                  "against": "timm", "compile": args.compile}, "checks": checks}
    run = store.RunFile(args.results, record)
    store.rebuild_table(args.results)
    return run.path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """compare's own options; the shared ones come from ``bench.options.common_parser``."""
    p.add_argument("ids", nargs="*", metavar="ID", help="model ids (default: every model in the index)")
    p.add_argument("--against", choices=("timm",), default="timm", help="the implementation to compare with")
    p.add_argument("--gpu-dtypes", default="bfloat16,float16", help="AMP dtypes on CUDA (default: bfloat16,float16)")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory child processes")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd models (slow to compile)")
    p.add_argument("--no-onnxruntime", dest="onnxruntime", action="store_false",
                   help="leave out ONNX Runtime serving our exported model (CPU; needs the onnx extra)")
    p.add_argument("--no-store", action="store_true", help="do not record the run in the results store")
    p.add_argument("--memory-probe", choices=("ours", "timm"), help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if _import_timm() is None:
        print("cc-bench compare: timm is not installed; it is the implementation compared against "
              "(pip install 'cc-hub[test]' or pip install timm)", file=sys.stderr)
        return EXIT_USAGE
    import registry

    from . import env as env_mod

    from . import options, store

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device, why_not = env_mod.resolve_device(args.device)
    if device == "cuda" and why_not:
        raise UsageError(f"--device cuda: {why_not}")
    args.batch_sizes = options.flat(args.batch_sizes) or ((1, 256) if device == "cuda" else (1, 32))
    args.warmup = 2 if args.warmup is None else args.warmup
    args.repeats = 7 if args.repeats is None else args.repeats
    if not args.no_store and not args.memory_probe:
        store.check_store(args.results)
    args.gpu_dtypes = tuple(d.strip() for d in args.gpu_dtypes.split(",") if d.strip())
    if not args.gpu_dtypes or not set(args.gpu_dtypes) <= {"bfloat16", "float16"}:
        raise UsageError("--gpu-dtypes takes bfloat16 and/or float16 (AMP dtypes), comma-separated")
    if args.memory_probe:
        return _memory_probe(args.memory_probe, args.ids[0], args.batch_sizes[0], args.index)

    index = registry.load(args.index)
    entries = [index.get(i) for i in args.ids] if args.ids else list(index)
    log = (lambda line: print(line, file=sys.stderr)) if args.format == "json" else print
    environment = env_mod.collect(device).to_dict()
    log(f"cc-bench compare: {environment['device_name']}, torch {environment['torch_version']}, "
        f"{environment['threads']} threads; ours fused + channels_last vs timm eager; median of {args.repeats}")
    rows, parities = [], {}
    try:
        for entry in entries:
            variant_rows, parities[entry.id] = compare_variant(entry, index, args, device, log)
            rows += variant_rows
    except CompareError as exc:
        print(f"cc-bench compare: {exc}", file=sys.stderr)
        return EXIT_FAILED
    stored = None if args.no_store else store_rows(rows, parities, args, environment)
    if args.format == "json":
        print(json.dumps({"environment": environment, "rows": [asdict(r) for r in rows], "parity": parities,
                          "results_run": str(stored) if stored else None}, indent=2))
    else:
        print_summary(rows, log)
        if stored:
            log(f"results: {stored}; `cc-bench publish {stored.stem}` adds it to the published results and docs")
    return EXIT_OK


def print_summary(rows: Sequence[Row], log: Callable[[str], None]) -> None:
    log("")
    log(f"{'model':26} {'bs':>4} {'dtype':>13} {'ours':>9} {'timm':>9} {'ratio':>6} {'plain':>9} {'vs plain':>8} "
        f"{'RSS ours':>9} {'RSS timm':>9}")
    for r in rows:
        num = lambda v, f: format(v, f) if v is not None else "-"
        log(f"{r.model_id:26} {r.batch_size:>4} {r.dtype:>13} {r.ours:>9.2f} {r.timm:>9.2f} {r.ratio:>5.2f}x "
            f"{num(r.plain, '>9.2f'):>9} {num(r.ratio_vs_plain, '>7.2f'):>7}x {num(r.peak_rss_ours_mib, '>9.0f'):>9} "
            f"{num(r.peak_rss_timm_mib, '>9.0f'):>9}")

