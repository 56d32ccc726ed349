"""Ours against timm: the same weights, every contender side by side in one process.

    cc-bench compare --against timm [ID ...] [--batch-sizes 1 32] [--repeats 7] [--compile] [--no-tune-cpu]

For each variant it builds our model and timm's, gives both the same weights
(the entry's checkpoint from ``--checkpoint-dir`` when there, else calibrated
random ones, see ``bench.calibrate``), checks that their outputs agree within
1e-4 (unfused, fused, channels_last), then times every contender of
``CONTENDERS`` (a list of named compute forms) interleaved: each repeat runs
every contender once, in a shuffled order (so that no contender always runs
right after the same other one), same threads, dtype and allocator state;
warm-up, median. Before timing, each contender's output at that batch
size is checked against its oracle (timm eager, or timm's plain EfficientNet
for the no-CondConv reference).

On CPU the contenders are ours (``model.eval().fuse()``, channels_last), the
strongest timm forms (eager NCHW, channels_last, traced + frozen +
``optimize_for_inference``), and our builder's plain EfficientNet-B0/B1 (no
CondConv, same inference form): ours / plain is CondConv's own overhead.
``ratio`` is ours against the fastest timm form (ratio of medians); each ratio is printed with the first and
third quartiles of the same ratio round by round ("[rounds q1-q3]"), which shows how far the host moved
it within the run. On CPU every round also times the host reference of ``cc-bench run``
(``bench.throughput.host_reference``: torchvision's MobileNetV2, none of our code or timm's): a host that is
more than 10% slower than in the latest earlier compare run on the same fingerprint, threads and batch size
(not itself flagged) is flagged on the row ("host SLOWER"), in the record and on the docs' results page; after
three flagged runs in a row whose host references agree within 5%, the host is taken as another host and
the latest of them becomes the baseline (``--baseline RUN_ID`` names one outright). Against the same earlier run
each ratio that fell by more than 10% is a regression (the row and the record's status say so, as
``cc-bench run``'s throughput check does; reported, not failed), unless the host was slower: a run under contention
is not comparable with one without: in run 20261128T111555Z-5e9a ours and plain ran 6-34% slower than in run
20261128T110134Z-fea9 14 minutes earlier and ours / best timm fell to 1.06x on b1_8e at batch 1 (1.41x then):
a neighbour's memory traffic hurts the expert reads most. On CUDA: ours, plain and timm
channels_last under AMP. ONNX Runtime serving our exported model joins on CPU
when the onnx extra is installed (exported in a child process, see
``bench.onnx_runtime``). Peak memory is each model's own child process's peak
resident set (build + one forward at the batch size), measured the same way
for both.

On CUDA (``--device cuda``): the parity check is repeated there in fp32 with
TF32 off (ours through the Triton kernels); each AMP dtype is timed at batch
256, all eager, and at batch 1 with ours as a CUDA graph
(``cc_models.cuda_graph``) against timm and the plain model eager. Peak memory
is ``torch.cuda.max_memory_allocated`` of one forward (ours at batch 1: of the
graph's capture) plus the model's own parameters and buffers.

The process starts with ``cc_models.runtime.tune_cpu`` (glibc malloc tuned,
denormals flushed) unless ``--no-tune-cpu``; the run record states the
allocator. timm is optional: without it the command says so and exits 2.
Results go to the bench's results store (check ``compare``); ``cc-bench publish``
puts them on the docs' results page.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import random
import re
import resource
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from . import rounds, throughput
from .options import UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
TOLERANCE = 1e-4
# The issues' targets, printed beside the figures (not asserted anywhere): ours / best timm form,
# and ours / our plain model (at least 0.9: CondConv costs at most 10%).
TARGETS_CPU = {1: 1.3, 32: 1.3}
TARGET_VS_PLAIN = 0.9
TARGETS_GPU = {1: 4.0, 256: 5.0}  # batch 1: ours as a CUDA graph vs timm eager; 256: both eager
TARGET_VS_PLAIN_GPU = 0.95
HOST = "host_reference"  # the runner timing bench.throughput.host_reference beside the contenders (CPU)
HOST_DROP = 0.10  # the host reference this much slower than in the previous compare run: the host is contended
RATIO_DROP = 0.10  # a ratio this much below the previous compare run's, on a host that is not slower: a regression
# A host that stays slower is another host, not contention: this many flagged runs in a row whose host reference
# agrees within STEADY_SPREAD of their median make the latest of them the baseline. Without this a slower machine
# behind the same fingerprint was flagged against the faster one's run for ever and never judged again.
STEADY_RUNS = 3
STEADY_SPREAD = 0.05
MIN_TIME_S = 5.0  # CPU, without --repeats: timed calls per batch size, all contenders together
MAX_REPEATS = 200
DESCRIPTION = ("Build our model and timm's with the same weights, check their outputs agree within 1e-4 (unfused, "
               "fused, channels_last), then time every contender interleaved in one process: ours, our plain "
               "EfficientNet (no CondConv), timm eager, channels_last and traced+frozen, and ONNX Runtime when "
               "installed; report images/s, ratios and peak memory. Needs timm (exit 2 without it). "
               "Defaults: --warmup 2, --repeats 7 (on CPU, more rounds until 5 s of timed calls per batch size).")


class CompareError(Exception):
    """The comparison cannot be trusted (outputs disagree) or cannot run."""


@dataclass
class Row:
    model_id: str
    batch_size: int
    dtype: str
    images_per_s: dict[str, float]  # contender name -> median images/s
    times_s: dict[str, list[float]]  # contender name -> every timed run
    timm_form: str  # the fastest timm contender, the one ``timm`` and ``ratio`` refer to
    plain_id: str | None  # the timm architecture our plain reference equals
    peak_rss_ours_mib: float | None = None
    peak_rss_timm_mib: float | None = None
    compiled: dict | None = None
    ours_form: str = "fused + channels_last"
    peak_cuda_ours_mib: float | None = None  # torch.cuda.max_memory_allocated of one forward (or graph capture)
    peak_cuda_timm_mib: float | None = None
    # CPU: the host reference timed in every round (label, median images/s, its round quartiles in images/s)
    host_reference: str | None = None
    host_images_per_s: float | None = None
    host_quartiles: tuple[float, float] | None = None
    # the latest earlier compare run of this model and batch size on the same fingerprint, threads and dtype:
    # run_id, ratio, ratio_vs_plain and host_images_per_s (with the same reference) where it has them
    previous: dict | None = None
    ours: float = field(init=False)
    timm: float = field(init=False)
    ratio: float = field(init=False)
    plain: float | None = field(init=False)
    ratio_vs_plain: float | None = field(init=False)
    # quartiles of the same ratios round by round (each round times every contender once, back to back): how far
    # the host moved them within the run; None below two rounds
    ratio_quartiles: tuple[float, float] | None = field(init=False)
    ratio_vs_plain_quartiles: tuple[float, float] | None = field(init=False)

    def __post_init__(self) -> None:
        self.ours, self.timm = self.images_per_s["ours"], self.images_per_s[self.timm_form]
        self.ratio = self.ours / self.timm
        self.plain = self.images_per_s.get("plain")
        self.ratio_vs_plain = self.ours / self.plain if self.plain else None
        self.ratio_quartiles = round_ratio_quartiles(self.times_s, self.timm_form)
        self.ratio_vs_plain_quartiles = round_ratio_quartiles(self.times_s, "plain") if self.plain else None

    @property
    def host_change(self) -> float | None:
        """The host reference's speed over the previous run's, minus 1; None where either did not time it."""
        before = (self.previous or {}).get("host_images_per_s")
        return self.host_images_per_s / before - 1 if before and self.host_images_per_s else None

    @property
    def host_slower(self) -> bool:
        """The host reference ran more than ``HOST_DROP`` slower than in the previous compare run."""
        return self.host_change is not None and self.host_change < -HOST_DROP

    @property
    def ratio_changes(self) -> dict[str, float]:
        """Each ratio over the previous run's, minus 1."""
        now = {"ratio": self.ratio, "ratio_vs_plain": self.ratio_vs_plain}
        return {name: now[name] / (self.previous or {})[name] - 1 for name in now
                if now[name] and (self.previous or {}).get(name)}

    @property
    def regressions(self) -> list[str]:
        """The ratios that fell by more than ``RATIO_DROP`` against the previous run, on a host that was not slower
        (contention moves the ratios: the expert reads suffer most)."""
        if self.host_slower:
            return []
        return [name for name, change in self.ratio_changes.items() if change < -RATIO_DROP]

    def time_host(self, times: list[float] | None, reference: str | None) -> None:
        """Record the host reference's timed rounds (seconds per call)."""
        if not times or not reference:
            return
        self.host_reference = reference
        self.host_images_per_s = self.batch_size / statistics.median(times)
        if len(times) >= 2:
            q1, _, q3 = statistics.quantiles(times, n=4)
            self.host_quartiles = (self.batch_size / q3, self.batch_size / q1)


def previous_run(history: list[dict] | None, row: Row, environment: dict, baseline: str | None = None
                 ) -> dict | None:
    """The earlier compare run of ``row``'s model and batch size on the same fingerprint, threads and dtype
    (history: bench.store.history rows) that ``row`` is judged against: its run_id and ratios, and its host
    reference figure where it timed the same one (label); None without such a run.

    That is run ``baseline`` where given (flagged or not), else the latest run not itself flagged contended: a
    contended run's ratios are depressed, so the next run would look better than it is. Except where the
    ``STEADY_RUNS`` runs since it were all flagged with host references within ``STEADY_SPREAD`` of their median:
    the host is steadily slower (another machine behind the same fingerprint), and the latest of them is the
    baseline (``"steady"`` lists them, ``"instead_of"`` names the run it replaces)."""
    fingerprint = environment.get("fingerprint_id")
    if not history or not fingerprint:
        return None
    from registry import results_schema as schema

    key = (schema.COMPARE, row.model_id, row.batch_size, fingerprint, row.dtype, environment.get("threads"))
    runs: dict[str, dict] = {}
    for h in history:
        if (h.get("check"), h.get("model_id"), h.get("batch_size"), h.get("fingerprint"), h.get("dtype"),
                h.get("threads")) != key:
            continue
        try:
            measured = float(h["measured"])
        except (KeyError, TypeError, ValueError):
            continue
        if not measured > 0:
            continue
        run = runs.setdefault(str(h.get("run_id")), {"run_id": str(h.get("run_id")),
                                                     "timestamp": str(h.get("timestamp"))})
        metric = h.get("metric")
        if metric in ("ratio", "ratio_vs_plain"):
            run[metric] = measured
        elif metric == f"images_per_s_{HOST}":
            try:
                extra = json.loads(h["extra"]) if isinstance(h.get("extra"), str) else h.get("extra") or {}
            except ValueError:
                continue
            host = extra.get(HOST) if isinstance(extra, dict) else None
            if isinstance(host, dict) and host.get("slower") is True:
                run["contended"] = True
            if isinstance(host, dict) and host.get("reference") == row.host_reference:
                run["host_images_per_s"] = measured
    def public(run: dict) -> dict:
        return {k: v for k, v in run.items() if k not in ("timestamp", "contended")}

    if baseline is not None:
        chosen = runs.get(baseline)
        return public(chosen) if chosen is not None and "ratio" in chosen else None
    order = sorted((r for r in runs.values() if "ratio" in r), key=lambda r: (r["timestamp"], r["run_id"]))
    clean = [r for r in order if not r.get("contended")]
    latest = clean[-1] if clean else None
    since = order[order.index(latest) + 1:] if latest is not None else order
    steady = since[-STEADY_RUNS:]
    hosts = [r.get("host_images_per_s") for r in steady]
    if len(steady) == STEADY_RUNS and all(hosts):
        middle = statistics.median(hosts)
        if all(abs(h / middle - 1) <= STEADY_SPREAD for h in hosts):
            return {**public(steady[-1]), "steady": [r["run_id"] for r in steady],
                    "instead_of": latest["run_id"] if latest is not None else None}
    return public(latest) if latest is not None else None


def check_baseline(run_id: str, history: list[dict] | None, results: Path, device: str) -> None:
    """``--baseline``: a compare run in the store (rows of other fingerprints, threads or batch sizes are then
    judged against nothing, and say so)."""
    if device != "cpu":
        raise UsageError("--baseline: only CPU compare runs are judged against an earlier run")
    from registry import results_schema as schema

    known = sorted({str(h.get("run_id")) for h in history or () if h.get("check") == schema.COMPARE})
    if run_id not in known:
        latest = ", ".join(known[-5:]) or "none"
        raise UsageError(f"--baseline {run_id}: no compare run with that id in the results store {results} "
                         f"(its latest compare runs: {latest})")


def round_ratio_quartiles(times_s: dict[str, list[float]], other: str) -> tuple[float, float] | None:
    """First and third quartiles of ours' speed over ``other``'s, round by round (its time over ours)."""
    ratios = [t_other / t_ours for t_ours, t_other in zip(times_s.get("ours", ()), times_s.get(other, ()))]
    if len(ratios) < 2:
        return None
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return q1, q3


@dataclass
class Models:
    """The models one variant's contenders run, all holding the same weights (plain: its own)."""

    ours: nn.Module  # inference form
    timm: nn.Module  # as timm.create_model returns it
    plain: nn.Module | None  # our builder without CondConv, inference form
    timm_plain: nn.Module | None  # timm's plain EfficientNet holding plain's weights: plain's oracle
    onnxruntime: object | None = None  # bench.onnx_runtime.OnnxRuntimeContender serving our export (CPU)

    def reference(self, family: str) -> nn.Module:
        return self.timm_plain if family == "plain" else self.timm


Runner = Callable[[], torch.Tensor]


@dataclass(frozen=True)
class Contender:
    """One named compute form: ``make(models, x)`` returns a runner that computes on batch ``x``."""

    name: str  # results metric images_per_s_<name>
    label: str
    family: str  # "ours", "timm" or "plain" (which oracle checks it)
    devices: tuple[str, ...]
    make: Callable[[Models, torch.Tensor], Runner]
    needs: str  # the Models field it runs: the contender is left out where that is None

    def available(self, models: Models) -> bool:
        return getattr(models, self.needs) is not None


def _channels_last(model: nn.Module, x: torch.Tensor) -> Runner:
    x = x.contiguous(memory_format=torch.channels_last)
    return lambda: model(x)


def _timm_channels_last(models: Models, x: torch.Tensor) -> Runner:
    # A copy: the eager contender keeps timm's model as created (contiguous).
    return _channels_last(copy.deepcopy(models.timm).to(memory_format=torch.channels_last), x)


def _onnxruntime(models: Models, x: torch.Tensor) -> Runner:
    run = models.onnxruntime.runner(x)
    return lambda: torch.from_numpy(run()[0])


def _timm_traced_frozen(models: Models, x: torch.Tensor) -> Runner:
    """TorchScript at this batch shape, frozen and optimised for inference (oneDNN conv fusions)."""
    model = copy.deepcopy(models.timm).to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated; it is still timm's fastest form
        traced = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, x, check_trace=False)))
    return lambda: traced(x)


CONTENDERS: list[Contender] = [
    Contender("ours", "cc_models, fused + channels_last", "ours", ("cpu", "cuda"),
              lambda m, x: _channels_last(m.ours, x), "ours"),
    Contender("plain", "cc_models without CondConv (plain B0/B1), fused + channels_last", "plain", ("cpu", "cuda"),
              lambda m, x: _channels_last(m.plain, x), "plain"),
    Contender("timm_eager", "timm eager, NCHW", "timm", ("cpu",), lambda m, x: (lambda: m.timm(x)), "timm"),
    Contender("timm_channels_last", "timm eager, channels_last", "timm", ("cpu", "cuda"), _timm_channels_last,
              "timm"),
    # Issue 11's GPU reference: timm's own plain EfficientNet of the same size, as timm's benchmark runs it.
    Contender("timm_plain", "timm plain EfficientNet (no CondConv), channels_last", "plain", ("cuda",),
              lambda m, x: _channels_last(copy.deepcopy(m.timm_plain).to(memory_format=torch.channels_last), x),
              "timm_plain"),
    Contender("timm_traced_frozen", "timm traced + frozen + optimize_for_inference, channels_last", "timm",
              ("cpu",), _timm_traced_frozen, "timm"),
    Contender("onnxruntime", "ONNX Runtime (CPU) serving our exported model", "ours", ("cpu",), _onnxruntime,
              "onnxruntime"),
]


def contenders_for(device: str) -> list[Contender]:
    return [c for c in CONTENDERS if device in c.devices]


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
    """Ours as a user runs it for inference: fused (BatchNorm and SiLUs folded into the convolutions: oneDNN
    on CPU, Triton on CUDA), channels_last, on ``device``."""
    return model.fuse().to(device=device, memory_format=torch.channels_last)


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


def plain_models(entry, index, seed: int = 0) -> tuple[nn.Module, nn.Module] | tuple[None, None]:
    """Our builder's EfficientNet without CondConv (experts removed) and timm's plain model of the same
    size, eval mode, the same calibrated random weights (no checkpoint exists for ours)."""
    import cc_models
    import timm

    from .calibrate import randomize_

    plain_id = plain_reference(entry.id)
    if plain_id is None:
        return None, None
    torch.manual_seed(seed)
    ours = randomize_(cc_models.from_index(entry.id, index=index, experts_multiplier=0), seed=seed,
                      size=entry.data.input_size[1:]).eval()
    theirs = timm.create_model(plain_id, pretrained=False, num_classes=ours.num_classes).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


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
                     autocast: contextlib.AbstractContextManager | None = None,
                     min_time_s: float = 0.0) -> dict[str, list[float]]:
    """Seconds per call of each runner; every repeat runs each once, in a shuffled order (seeded). Repeats
    go on past ``repeats`` until the timed calls add up to ``min_time_s`` (at most ``MAX_REPEATS``).

    On CPU each timed call follows an untimed call of the same runner (``rounds.WARM_CALLS``), as in a process
    serving one model: timed right after another contender, a model whose weights fit the last-level cache reads
    them from memory instead. Back to back in one process (b0_4e, b0_8e and b1_8e, batch 1), our plain model ran up
    to 10% faster than timed one call per round after ours; ours, whose experts do not fit, ran the same.

    Shuffled, not rotated: rotating the start of a fixed cycle keeps every runner's predecessor the same, and
    what ran just before moves a CPU timing. In run 20261128T041927Z-ef90 (rotation) ours always followed ONNX
    Runtime; our plain model ran 69 img/s after ONNX Runtime and 79 after ours (b0_4e, batch 1)."""
    timer = throughput.timer(device)
    names = list(runners)
    order = random.Random(0)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode(), (autocast or contextlib.nullcontext()):
        for _ in range(warmup):
            for n in names:
                runners[n]()
        if device == "cuda":
            torch.cuda.synchronize()
        r = 0
        while r < repeats or (r < MAX_REPEATS and sum(map(sum, times.values())) < min_time_s):
            for n in order.sample(names, len(names)):
                if device == "cpu":
                    for _ in range(rounds.WARM_CALLS):
                        runners[n]()
                times[n].append(timer(runners[n]))
            r += 1
    return times


def peak_rss_mib(impl: str, model_id: str, batch_size: int, args: argparse.Namespace) -> float | None:
    """Peak resident memory (MiB) of a child process that builds one model and runs one batch
    (in the same allocator state as this process)."""
    cmd = [sys.executable, "-m", "bench", "compare", "--memory-probe", impl, model_id, "--batch-sizes",
           str(batch_size), "--threads", str(torch.get_num_threads()), "--device", "cpu"]
    if args.index:
        cmd += ["--index", str(args.index)]
    if not args.tune_cpu:
        cmd.append("--no-tune-cpu")
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


def check_contenders(runners: dict[str, Runner], contenders: Sequence[Contender], models: Models,
                      x: torch.Tensor) -> dict[str, float]:
    """Max |output - oracle| of every contender on the batch it will be timed on; CompareError beyond 1e-4."""
    with torch.inference_mode():
        expected = {family: models.reference(family)(x) for family in {c.family for c in contenders}}
        diffs = {c.name: (runners[c.name]() - expected[c.family]).abs().max().item() for c in contenders}
    bad = {k: v for k, v in diffs.items() if not v <= TOLERANCE}
    if bad:
        raise CompareError(f"outputs differ from their oracle beyond {TOLERANCE:g}: {bad}; "
                           "timing would compare different computations")
    return diffs


def compare_variant(entry, index, args, device: str, log: Callable[[str], None], history: list[dict] | None = None,
                    environment: dict | None = None) -> tuple[list[Row], dict]:
    ours, theirs = paired_models(entry, index, args.checkpoint_dir)
    parity = check_parity(ours, theirs, entry.data.input_size)
    plain, timm_plain = plain_models(entry, index)
    if plain is not None:
        plain_parity = check_parity(plain, timm_plain, entry.data.input_size)
        parity.update({f"plain_{k}": v for k, v in plain_parity.items() if k != "logit_scale"})
    log(f"{entry.id}: outputs agree with timm (max |diff| {max(v for k, v in parity.items() if k != 'logit_scale'):.2e}, "
        f"logits up to {parity['logit_scale']:.2f})")
    ort = None
    if device == "cpu" and args.onnxruntime:  # exported in a child process, before anything here is timed
        from .onnx_runtime import prepare

        ort = prepare(entry, args.index, args.checkpoint_dir, ours, log)
    gpu = device == "cuda"
    # fused by check_parity already: this places them (and folds the SiLUs into the kernels, on CUDA)
    models = Models(inference_form(ours, device), theirs.to(device),
                    inference_form(plain, device) if plain is not None else None,
                    timm_plain.to(device) if timm_plain is not None else None, ort)
    if gpu:
        parity["cuda_fp32"] = check_cuda_parity(models.ours, models.timm, entry.data.input_size)
        log(f"{entry.id}: on CUDA (fp32, TF32 off) outputs agree with timm (max |diff| {parity['cuda_fp32']:.2e})")
    contenders = [c for c in contenders_for(device) if c.available(models)]
    rows = []
    dtypes = args.gpu_dtypes if gpu else ("float32",)
    reference, reference_model = throughput.host_reference() if not gpu else (None, None)
    for bs in args.batch_sizes:
        x = torch.randn(bs, *entry.data.input_size, device=device)
        runners = {c.name: c.make(models, x) for c in contenders}
        if not gpu:  # fp32: every contender against its oracle at this batch (AMP outputs differ by design)
            parity[f"batch_{bs}"] = check_contenders(runners, contenders, models, x)
        for dtype in dtypes:
            autocast = torch.autocast("cuda", dtype=getattr(torch, dtype)) if gpu else None
            timed, peaks = dict(runners), {}
            if reference_model is not None:  # the same batch, as cc-bench run times it
                x_ref = x.contiguous(memory_format=torch.channels_last)
                timed[HOST] = lambda: reference_model(x_ref)
            if gpu:
                peaks = cuda_forms(timed, models, x.contiguous(memory_format=torch.channels_last),
                                   autocast_dtype=getattr(torch, dtype))
            times = time_interleaved(timed, warmup=args.warmup, repeats=args.repeats, device=device,
                                     autocast=autocast, min_time_s=args.min_time_s)
            host_times = times.pop(HOST, None)
            ips = {n: bs / statistics.median(t) for n, t in times.items()}
            timm_form = max((c.name for c in contenders if c.family == "timm"), key=ips.__getitem__)
            row = Row(entry.id, bs, dtype + ("-amp" if gpu else ""), ips,
                      {n: [round(v, 6) for v in t] for n, t in times.items()}, timm_form, plain_reference(entry.id),
                      ours_form=peaks.get("form", "fused + channels_last"), peak_cuda_ours_mib=peaks.get("ours"),
                      peak_cuda_timm_mib=peaks.get("timm"))
            row.time_host(host_times, reference)
            row.previous = previous_run(history, row, environment or {}, args.baseline)
            if args.memory and not gpu:
                row.peak_rss_ours_mib = peak_rss_mib("ours", entry.id, bs, args)
                row.peak_rss_timm_mib = peak_rss_mib("timm", entry.id, bs, args)
            if args.compile:
                x_cl = x.contiguous(memory_format=torch.channels_last)
                row.compiled = compile_and_time(models.ours, models.timm, x_cl, x_cl if gpu else x, args, device,
                                                autocast)
            log(format_row(row))
            rows.append(row)
    return rows, parity


def cuda_forms(runners: dict[str, Runner], models: Models, x: torch.Tensor, *, autocast_dtype: torch.dtype) -> dict:
    """On CUDA at batch 1, replace ours by its CUDA-graph form (``cc_models.cuda_graph``; timm stays eager, as its
    users run it); measure each model's peak CUDA memory (ours: the graph's capture, which holds its memory)."""
    import cc_models

    out: dict = {"form": "fused + channels_last + Triton kernels"}
    with torch.inference_mode(), torch.autocast("cuda", dtype=autocast_dtype):
        out["timm"] = peak_cuda_mib(runners["timm_channels_last"], models.timm)
        if x.shape[0] == 1:
            box = {}
            out["ours"] = peak_cuda_mib(
                lambda: box.update(run=cc_models.cuda_graph(models.ours, x, autocast_dtype=autocast_dtype)),
                models.ours)
            runners["ours"] = lambda: box["run"](x)
            out["form"] += " + CUDA graph"
        else:
            out["ours"] = peak_cuda_mib(runners["ours"], models.ours)
    return out


def compile_and_time(ours, theirs, x_ours, x_timm, args, device, autocast) -> dict:
    """torch.compile both (fixed shapes), counting compile time, then time them the same way, interleaved with
    ours in its eager inference form (``ours_eager``): is a compiled timm the best timm form?

    On CPU with inductor's inference setting (``freezing``: weights constant-folded and packed for oneDNN,
    post-ops fused) and timm in channels_last, its fastest compiled form measured here.
    """
    out = {}
    compiled = {"ours_eager": lambda: ours(x_ours)}
    cpu = device == "cpu"
    if cpu:
        theirs, x_timm = copy.deepcopy(theirs).to(memory_format=torch.channels_last), x_ours
    for name, model, x in (("ours", ours, x_ours), ("timm", theirs, x_timm)):
        fn = torch.compile(copy.deepcopy(model), dynamic=False)
        t0 = time.perf_counter()
        with torch.inference_mode(), (autocast or contextlib.nullcontext()), _inductor_freezing(cpu):
            fn(x)
        out[f"compile_s_{name}"] = time.perf_counter() - t0
        compiled[name] = (lambda f=fn, x=x: f(x))
    with _inductor_freezing(cpu):
        times = time_interleaved(compiled, warmup=1, repeats=args.repeats, device=device, autocast=autocast,
                                 min_time_s=args.min_time_s)
    bs = x_ours.shape[0]
    for name, t in times.items():
        out[f"images_per_s_{name}"] = bs / statistics.median(t)
    out["form"] = "inductor, freezing, channels_last" if cpu else "inductor"
    out["ratio"] = out["images_per_s_ours"] / out["images_per_s_timm"]
    out["ratio_eager_vs_compiled_timm"] = out["images_per_s_ours_eager"] / out["images_per_s_timm"]
    return out


def _inductor_freezing(on: bool) -> contextlib.AbstractContextManager:
    if not on:
        return contextlib.nullcontext()
    import torch._inductor.config as inductor_config

    return inductor_config.patch(freezing=True)


def _target(value: float | None, target: float | None) -> str:
    if value is None or target is None:
        return ""
    return f" (target >= {target:.1f}x: {'met' if value >= target else 'NOT met'})"


def _spread(quartiles: tuple[float, float] | None) -> str:
    return f" [rounds {quartiles[0]:.2f}-{quartiles[1]:.2f}]" if quartiles else ""


def host_note(r: Row) -> str:
    """The host reference's figure and its spread over the rounds."""
    spread = f" [rounds {r.host_quartiles[0]:.1f}-{r.host_quartiles[1]:.1f}]" if r.host_quartiles else ""
    return f"host reference {r.host_images_per_s:.1f} img/s{spread}"


def previous_note(r: Row) -> str:
    """How the row compares with the previous compare run: its ratios then, the host then, and the verdict."""
    prev = r.previous
    if prev is None:
        return "no earlier compare run on this fingerprint to judge against"
    names = {"ratio": "ours / best timm", "ratio_vs_plain": "ours / plain"}
    parts = [f"{names[n]} {prev[n]:.2f}x then ({c:+.0%})" for n, c in r.ratio_changes.items()]
    if r.host_change is not None:
        parts.append(f"host reference {prev['host_images_per_s']:.1f} img/s then ({r.host_change:+.0%})")
    text = f"against run {prev['run_id']}: " + ", ".join(parts)
    if prev.get("steady"):
        text += (f" (the baseline since the host reference held within {STEADY_SPREAD:.0%} over the "
                 f"{len(prev['steady'])} runs {', '.join(prev['steady'])}, each flagged SLOWER"
                 + (f" than run {prev['instead_of']}" if prev.get("instead_of") else "")
                 + ": a steadily slower host is another host)")
    if r.host_slower:
        return text + (f": host SLOWER by more than {HOST_DROP:.0%}: contended (or another machine that reports the "
                       "same fingerprint); this run's figures and ratios are not comparable with that run's")
    if r.regressions:
        fell = " and ".join(names[n] for n in r.regressions)
        host = "the host no slower" if r.host_change is not None else "the host not timed then"
        return text + f": REGRESSION: {fell} fell by more than {RATIO_DROP:.0%} ({host})"
    return text


def format_row(r: Row) -> str:
    gpu = r.dtype.endswith("-amp")
    target = (TARGETS_GPU if gpu else TARGETS_CPU).get(r.batch_size)
    others = ", ".join(f"{n} {v:.2f}" for n, v in r.images_per_s.items() if n != "ours")
    graph = " (CUDA graph)" if "graph" in r.ours_form else ""
    text = (f"{r.model_id} bs={r.batch_size} {r.dtype}: ours{graph} {r.ours:.2f} img/s ({others}); "
            f"ours / best timm ({r.timm_form}) {r.ratio:.2f}x{_spread(r.ratio_quartiles)}{_target(r.ratio, target)}")
    if r.ratio_vs_plain is not None:
        text += (f"; ours / plain {r.ratio_vs_plain:.2f}x{_spread(r.ratio_vs_plain_quartiles)}"
                 f"{'' if gpu else _target(r.ratio_vs_plain, TARGET_VS_PLAIN)}")
    if "timm_plain" in r.images_per_s:
        vs = r.ours / r.images_per_s["timm_plain"]
        text += f"; ours / timm {r.plain_id} {vs:.2f}x{_target(vs, TARGET_VS_PLAIN_GPU)}"
    if r.peak_cuda_ours_mib is not None and r.peak_cuda_timm_mib is not None:
        text += f"; peak CUDA memory ours {r.peak_cuda_ours_mib:.0f} MiB, timm {r.peak_cuda_timm_mib:.0f} MiB"
    if r.peak_rss_ours_mib is not None and r.peak_rss_timm_mib is not None:
        text += f"; peak RSS ours {r.peak_rss_ours_mib:.0f} MiB, timm {r.peak_rss_timm_mib:.0f} MiB"
    if r.host_images_per_s is not None:
        text += f"; {host_note(r)}"
    if not gpu:
        text += f"; {previous_note(r)}"
    if r.compiled:
        c = r.compiled
        text += (f"; compiled ({c['form']}): ours {c['images_per_s_ours']:.2f}, timm {c['images_per_s_timm']:.2f} "
                 f"img/s ({c['ratio']:.2f}x; compile {c['compile_s_ours']:.0f} s / {c['compile_s_timm']:.0f} s); "
                 f"ours eager / compiled timm {c['ratio_eager_vs_compiled_timm']:.2f}x")
    return text


def store_rows(rows: Sequence[Row], parities: dict, args, environment: dict) -> Path:
    """One run in the results store, check ``compare``: a metric per contender, plus the ratios."""
    from registry import results_schema as schema

    from . import store

    checks = []
    labels = {c.name: c.label for c in CONTENDERS}
    for r in rows:
        common = dict(model_id=r.model_id, check=schema.COMPARE, batch_size=r.batch_size, dtype=r.dtype,
                      device=environment["device"], device_name=environment["device_name"],
                      fingerprint=environment["fingerprint_id"], threads=environment["threads"],
                      allocator=environment["allocator"], torch_version=environment["torch_version"],
                      status=schema.INFO, tolerance="", claimed=None)
        extra = {"parity_max_abs_diff": parities[r.model_id], "plain_reference": r.plain_id,
                 "timm_form": r.timm_form, "contenders": {n: labels.get(n, n) for n in r.images_per_s},
                 "times_s": r.times_s, "repeats": args.repeats, "warmup": args.warmup,
                 "allocator": environment.get("allocator"), "ours_form": r.ours_form, "compiled": r.compiled}
        if r.host_images_per_s is not None:
            extra[HOST] = {"reference": r.host_reference, "quartiles_images_per_s": r.host_quartiles,
                           "slower": r.host_slower}
        if r.previous is not None:
            extra["previous"] = {**r.previous, "host_change": r.host_change, "ratio_changes": r.ratio_changes,
                                 "regressions": r.regressions}
        metrics = [(f"images_per_s_{n}", v, "img/s") for n, v in r.images_per_s.items()]
        metrics += [("images_per_s_timm", r.timm, "img/s"), ("ratio", r.ratio, "x"),
                    ("ratio_vs_plain", r.ratio_vs_plain, "x"), ("peak_rss_ours", r.peak_rss_ours_mib, "MiB"),
                    ("peak_rss_timm", r.peak_rss_timm_mib, "MiB"), ("peak_cuda_ours", r.peak_cuda_ours_mib, "MiB"),
                    ("peak_cuda_timm", r.peak_cuda_timm_mib, "MiB"),
                    (f"images_per_s_{HOST}", r.host_images_per_s, "img/s")]
        for metric, value, unit in metrics:
            if value is None:
                continue
            status = schema.REGRESSION if metric in r.regressions else schema.INFO
            checks.append({**common, "metric": metric, "measured": round(value, 4), "unit": unit, "status": status,
                           "reason": format_row(r), "extra": extra})
    now = store.utc_now()
    record = {"format": schema.FORMAT, "run_id": store.new_run_id(now), "timestamp": store.iso(now),
              "finished": store.iso(store.utc_now()), "git_commit": environment["git_commit"],
              "environment": environment, "command": [args.prog, *args.argv],
              "index": str(args.index or "packaged"), "settings": {
                  "batch_sizes": list(args.batch_sizes), "repeats": args.repeats, "min_time_s": args.min_time_s,
                  "warmup": args.warmup,
                  "against": "timm", "compile": args.compile, "tune_cpu": args.tune_cpu}, "checks": checks}
    run = store.RunFile(args.results, record)
    store.rebuild_table(args.results)
    return run.path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """compare's own options; the shared ones come from ``bench.options.common_parser``."""
    p.add_argument("ids", nargs="*", metavar="ID", help="model ids (default: every model in the index)")
    p.add_argument("--against", choices=("timm",), default="timm", help="the implementation to compare with")
    p.add_argument("--gpu-dtypes", default="bfloat16,float16", help="AMP dtypes on CUDA (default: bfloat16,float16)")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory child processes")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd models (slow to compile; on CPU with inductor's freezing, timm in "
                   "channels_last) against ours eager")
    p.add_argument("--no-onnxruntime", dest="onnxruntime", action="store_false",
                   help="leave out ONNX Runtime serving our exported model (CPU; needs the onnx extra)")
    p.add_argument("--no-store", action="store_true", help="do not record the run in the results store")
    p.add_argument("--baseline", metavar="RUN_ID",
                   help="judge every row against this earlier compare run in the store (CPU), flagged or not, "
                        "instead of the latest unflagged one")
    p.add_argument("--memory-probe", choices=("ours", "timm"), help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if _import_timm() is None:
        print("cc-bench compare: timm is not installed; it is the implementation compared against "
              "(pip install 'cc-hub[test]' or pip install timm)", file=sys.stderr)
        return EXIT_USAGE
    import registry

    from . import env as env_mod, options, store

    options.apply_cpu_settings(args)  # before any model or input allocates
    device, why_not = env_mod.resolve_device(args.device)
    if device == "cuda" and why_not:
        raise UsageError(f"--device cuda: {why_not}")
    args.batch_sizes = options.flat(args.batch_sizes) or ((1, 256) if device == "cuda" else (1, 32))
    args.warmup = 2 if args.warmup is None else args.warmup
    # Without --repeats, CPU batch sizes whose 7 rounds take under MIN_TIME_S (batch 1) get more rounds: a
    # median of 7 moved batch 1's ratio by 0.08 between two runs of the same code on a 2-core machine.
    args.min_time_s = MIN_TIME_S if args.repeats is None and device == "cpu" else 0.0
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
        f"{environment['threads']} threads, allocator {environment['allocator']}, flush denormals "
        f"{environment['flush_denormals']}, CondConv CPU kernels {environment['cpu_kernels']}; contenders "
        f"interleaved, median of {args.repeats}"
        + (f" or more (at least {args.min_time_s:g} s of timed calls per batch size)" if args.min_time_s else ""))
    # earlier compare runs in the store: the host reference is judged against the latest on this fingerprint
    history = store.history(args.results, lambda m: print(f"cc-bench compare: warning: {m}", file=sys.stderr)) \
        if device == "cpu" and Path(args.results).is_dir() else None
    if args.baseline is not None:
        check_baseline(args.baseline, history, args.results, device)
    rows, parities = [], {}
    try:
        for entry in entries:
            variant_rows, parities[entry.id] = compare_variant(entry, index, args, device, log, history, environment)
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
    names = list(dict.fromkeys(n for r in rows for n in r.images_per_s))
    log("")
    log("images/s (median); ratio: ours / best timm form; vs plain: ours / our plain model (CondConv's overhead)")
    log(f"{'model':26} {'bs':>4} {'dtype':>13} " + " ".join(f"{n:>{max(9, len(n))}}" for n in names)
        + f" {'ratio':>6} {'vs plain':>8} {'RSS ours':>9} {'RSS timm':>9}")
    num = lambda v, f: format(v, f) if v is not None else "-"
    for r in rows:
        cells = " ".join(f"{num(r.images_per_s.get(n), '.2f'):>{max(9, len(n))}}" for n in names)
        log(f"{r.model_id:26} {r.batch_size:>4} {r.dtype:>13} {cells} {r.ratio:>5.2f}x "
            f"{num(r.ratio_vs_plain, '.2f'):>7}x {num(r.peak_rss_ours_mib, '.0f'):>9} "
            f"{num(r.peak_rss_timm_mib, '.0f'):>9}")

