"""C++ kernels for CondConv on CPU, in the inference form.

``CondConv2d`` calls :func:`run` in a fused model (``model.eval().fuse()``): on a channels_last float32 CPU input
it runs the depthwise kernel for the k x k depthwise CondConvs and, where :func:`pointwise_applies` (AVX-512
builds), the pointwise kernel for the 1x1 ones (a GEMM that mixes each sample's kernel as its packing step, with the
SE gate folded in); else the layer ends its pointwise CondConvs followed by a SiLU with :func:`bias_silu_` (bias and
SiLU in one pass after the batched product). :func:`pointwise` is the pointwise kernel for one call, its operands
worked out on the spot (``bench.conv_forms`` times it). The depthwise kernel
(``csrc/condconv_cpu.cpp``) mixes each sample's kernel from the experts into a buffer that
stays in cache and convolves straight from the channels_last input, bias and SiLU in
registers. On B0's depthwise CondConvs (2 threads, ``python -m bench.conv_forms``, remeasured 2026-11-28 with the
scratch buffers aligned): timm's form (the batch folded into the channels, one oneDNN grouped convolution, the input
copied to NCHW) runs 2.5-4.3x the time of the same layer with one shared kernel at batch 32; this kernel runs
1.0-1.2x of it (2.0-4.0x faster than the grouped form), and at batch 1 0.55-0.77x of it (2.0-3.9x faster than the
grouped form).

It is compiled on first use with the C++ compiler torch's extensions use (``c++``) and
``ninja`` (a dependency): about 10 s, once per machine, into torch's extension cache
(``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``), under a name keyed
by the source, the CPU's instruction set and the torch version. Where it cannot be built or loaded
(no compiler, no Python headers), a warning says why once and the layers keep their
PyTorch form: outputs are the same either way, within float rounding.
``CC_MODELS_CPU_KERNELS=0`` turns it off.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import shutil
import threading
import warnings
import weakref
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

from cc_models import hugepages

SOURCE = Path(__file__).parent / "csrc" / "condconv_cpu.cpp"
ENV_SWITCH = "CC_MODELS_CPU_KERNELS"
# -march=native: built where it runs (the build name carries the CPU's flags); -ffp-contract=fast: FMAs;
# -fopenmp: at::parallel_for is inline OpenMP, serial without it (the library then uses torch's loaded libgomp).
CFLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fopenmp")
LDFLAGS = ("-fopenmp",)

_build_lock = threading.Lock()
_failure: str | None = None  # why the kernel is unavailable, once known


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_name() -> str:
    """The extension's name: its build directory and cached library change with the source, the CPU's
    instruction set (``-march=native``) and the torch version."""
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), _cpu_flags(), torch.__version__, " ".join(CFLAGS + LDFLAGS)):
        digest.update(part if isinstance(part, bytes) else part.encode())
    return f"cc_condconv_cpu_{digest.hexdigest()[:12]}"


@functools.lru_cache(maxsize=1)
def _load() -> bool:
    global _failure
    if platform.machine().lower() not in ("x86_64", "amd64"):
        _failure = f"built and measured on x86-64 only (this is {platform.machine()})"
        return False
    try:
        _compile(build_name())
        torch.ops.cc_condconv.depthwise  # noqa: B018  (raise if the library did not register)
    except Exception as exc:  # no compiler, no headers, no ninja, a failed build: keep the PyTorch form
        _failure = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}"
        warnings.warn(f"cc_models: the CondConv CPU kernel could not be built ({_failure}); the depthwise "
                      f"CondConvs keep their PyTorch form (same outputs, slower). Set {ENV_SWITCH}=0 to skip "
                      "the attempt.", RuntimeWarning, stacklevel=3)
        return False
    return True


def _compile(name: str, defines: tuple[str, ...] = ()) -> None:
    """Build (or load from torch's extension cache) the library from SOURCE as ``name``, with extra -D flags."""
    from torch.utils import cpp_extension

    _ninja_on_path()
    with _build_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "No CUDA runtime is found": irrelevant to a CPU extension
        # lists of our own: torch appends to the ones it is given
        cpp_extension.load(name=name, sources=[str(SOURCE)], extra_cflags=[*CFLAGS, *defines],
                           extra_ldflags=list(LDFLAGS), is_python_module=False, verbose=False)


def _ninja_on_path() -> None:
    """torch builds extensions with the ``ninja`` it finds on PATH; the ``ninja`` wheel (a dependency) puts one in
    the environment's bin folder, which is not on PATH when the venv is not activated."""
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            return
        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])


def available() -> bool:
    """True when the kernel is enabled and built (building it on the first call)."""
    return enabled() and _load()


def failure() -> str | None:
    """Why :func:`available` is False after a failed build, else None."""
    return _failure


def _may_run(*tensors: torch.Tensor) -> bool:
    """CPU float32 operands, no autograd needed, nothing recording ATen ops (tracing, scripting, torch.compile,
    a TorchDispatchMode such as FlopCounterMode), and the library built."""
    return (all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
            and not torch.jit.is_tracing() and not torch.jit.is_scripting() and not torch.compiler.is_compiling()
            and not _dispatch_mode_active() and available())


def applies(layer: nn.Module, x: torch.Tensor, routing: torch.Tensor) -> bool:
    """Whether ``layer`` (a depthwise ``CondConv2d`` in its inference form) may run the depthwise kernel on ``x``
    (:func:`run` asks)."""
    return (x.dim() == 4 and x.numel() > 0 and x.is_contiguous(memory_format=torch.channels_last)
            and layer.groups == layer.in_channels == layer.out_channels and layer.dilation == (1, 1)
            and layer.stride[0] == layer.stride[1] and layer.epilogue_act in (None, "silu")
            and _may_run(x, layer.weight, routing))


def _has_pointwise() -> bool:
    """Whether the built library has the pointwise kernel: AVX-512 builds only (its micro-kernel needs 32 vector
    registers). Asked only once the library is loaded, so an early call cannot cache a False."""
    return _load() and build_isa() == "avx512"


@functools.lru_cache(maxsize=1)
def _build_isa() -> str:
    return torch.ops.cc_condconv.build_isa()


def build_isa() -> str | None:
    """The instruction set the library was compiled for: ``"avx512"``, ``"avx2"`` or ``"x86-64"``
    (``-march=native``, so this machine's), or None when it is not built. The pointwise kernel needs ``"avx512"``."""
    return _build_isa() if _load() else None


def pointwise_applies(layer: nn.Module, x: torch.Tensor, routing: torch.Tensor) -> bool:
    """Whether ``layer`` (a pointwise ``CondConv2d`` of a fused model: experts stored [Cin, Cout]) runs
    :func:`pointwise` on ``x``.

    The kernel mixes each sample's kernel from the experts in cache (in groups of samples where the experts do not
    stay in L2: :func:`group_size`); the batched-product form mixes the whole batch in one matrix product, written
    out and read back. Measured on this 2-core AVX-512 Xeon (``python -m bench.conv_forms`` times four of B0's
    shapes; 2026-11-28, scratch buffers aligned): 1.16-1.60x the batched product's speed at batch 1 with 4 or 8
    experts; at batch 32 1.05-1.33x, except 672->112 (0.94x with 4 experts, 0.86x with 8: three layers of B0, at
    most 0.6% of the pass; not re-checked in the model). Before grouping, the kernel ran 0.87-0.92x the
    batched product with 8 experts at batch 8-32; grouping the 1152-channel layers' samples made the whole b0_8e
    and b1_8e models 1.00-1.04x at batch 8 and 32 (in-model A/B), so the kernel serves every expert count and
    batch size."""
    return (layer.pointwise and layer.inference and layer.experts_in_out and layer.out_channels % 16 == 0
            and layer.epilogue_act in (None, "silu") and x.dim() == 4 and x.numel() > 0
            and x.is_contiguous(memory_format=torch.channels_last)
            and _may_run(x, layer.weight, routing) and _has_pointwise())


def epilogue_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a pointwise CondConv of ``x`` by the mixed ``weight`` may end in :func:`bias_silu_`."""
    return x.numel() > 0 and _may_run(x, weight)


def _dispatch_mode_active() -> bool:
    # FlopCounterMode and friends see ATen ops; an opaque custom op would hide the convolution from them.
    return _get_current_dispatch_mode() is not None


# layer -> {layout name: ((weight identity), the experts in that layout)}: rebuilt when the weight changes.
_layouts: weakref.WeakKeyDictionary[nn.Module, dict[str, tuple[tuple, torch.Tensor]]] = weakref.WeakKeyDictionary()


def _experts_layout(layer: nn.Module, name: str, build: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    weight = layer.weight
    key = (weight.data_ptr(), -1 if weight.is_inference() else weight._version, tuple(weight.shape))
    cached = _layouts.setdefault(layer, {}).get(name)
    if cached is not None and cached[0] == key:
        return cached[1]
    experts = build(weight.detach())
    _layouts[layer][name] = (key, experts)  # a race only builds the same tensor twice
    return experts


def _experts_taps_outer(layer: nn.Module) -> torch.Tensor:
    """The depthwise experts as [E, kh*kw*C]: each tap's channels contiguous, the layout the kernel mixes."""
    e, c = layer.num_experts, layer.out_channels
    kk = layer.kernel_size[0] * layer.kernel_size[1]
    return _experts_layout(layer, "taps_outer",
                           lambda w: w.view(e, c, kk).transpose(1, 2).reshape(e, kk * c).contiguous())


PANEL = 48  # output channels per panel of the pointwise kernel (csrc: kPanel)


def panel_spans(channels: int) -> list[tuple[int, int]]:
    """(first channel, width) of each panel of ``channels`` output channels (a multiple of 16): 48 wide, except
    that a lone last 16 (48, 48, 16) becomes two panels of 32 (48, 32, 32). The C++ kernel's panel_span."""
    vectors = channels // 16
    spans = [(v * 16, min(3, vectors - v) * 16) for v in range(0, vectors, 3)]
    if vectors % 3 == 1 and len(spans) >= 2:
        start = spans[-2][0]
        spans[-2:] = [(start, 32), (start + 32, 32)]
    return spans


def _experts_panels(layer: nn.Module) -> torch.Tensor:
    """The pointwise experts (``experts_in_out``: each [Cin, Cout]) as [panels, Cin, E, 48], cut by
    :func:`panel_spans` and zero-padded to 48 columns: one panel's slice of every expert is one contiguous stream
    for the kernel's mix."""
    e, k, n = layer.num_experts, layer.in_channels, layer.out_channels

    def build(w: torch.Tensor) -> torch.Tensor:
        # copied straight into place: one copy of the experts alive at a time, not a padded one besides. In huge
        # pages: at batch 1 the kernel streams all of them once per pass (see cc_models.hugepages).
        spans = panel_spans(n)
        w = w.view(e, k, n)
        out = hugepages.zeros((len(spans), k, e, PANEL), w.dtype)
        for j, (start, width) in enumerate(spans):
            out[j, :, :, :width].copy_(w[:, :, start:start + width].permute(1, 0, 2))
        return out

    return _experts_layout(layer, "panels", build)


# layer -> (weight key, {(input shape, threads): the kernel and its operands}): what a call of :func:`run` would
# otherwise work out again every time. Dropped, with every shape's plan, when the weight or the epilogue changes.
_plans: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict[tuple, tuple]]] = weakref.WeakKeyDictionary()
MAX_PLANS = 16  # shapes kept per layer before its plans start over


def run(layer: nn.Module, x: torch.Tensor, routing: torch.Tensor, gate: torch.Tensor | None = None
        ) -> torch.Tensor | None:
    """``layer``'s output (a ``CondConv2d`` in its inference form) through the C++ kernel that fits it, or None
    where none does (the caller then takes the PyTorch form).

    Whether a kernel applies (:func:`applies`, :func:`pointwise_applies`) and its operands (the experts' layout, the
    padding, the group size) are worked out once per layer, input shape and thread count; each call checks only
    what can change between calls of the same shape: the operands' device, dtype and memory format, autograd,
    tracing, compiling, dispatch modes and ``CC_MODELS_CPU_KERNELS``. Worked out on every call, that Python cost
    about 49 us a call beyond the op (b1_8e at batch 1, each layer on its own input after the kernels have left the
    caches cold), now about 20: 1.02-1.04x the whole model at batch 1 (b0_4e, b0_8e, b1_8e; 2 threads, in-model
    A/B), within the noise at batch 8 and 32."""
    if torch.compiler.is_compiling():  # torch.compile traces the PyTorch form; the plans' keys read real tensors
        return None
    weight = layer._parameters["weight"]  # the module dicts straight: nn.Module.__getattr__ costs 0.5 us a name
    weight_key = (weight.data_ptr(), -1 if weight.is_inference() else weight._version, layer.epilogue_act)
    entry = _plans.get(layer)
    plan = entry[1].get((x.shape, torch.get_num_threads())) if entry is not None and entry[0] == weight_key else None
    if plan is None:
        plan = _plan(layer, x, routing, gate, weight_key)
        if plan is None:
            return None
    elif not _may_run_now(x, weight, routing):
        return None
    expert_bias = layer._parameters.get("bias")
    bias = layer._buffers.get("static_bias") if expert_bias is None else layer._mixed_bias(routing)
    if plan[0] == "pointwise":
        return pointwise_call(x, routing, bias, gate, plan[1])
    return depthwise_call(x, routing, bias, plan[1])


def _plan(layer: nn.Module, x: torch.Tensor, routing: torch.Tensor, gate: torch.Tensor | None,
          weight_key: tuple) -> tuple | None:
    """The kernel for ``layer`` on inputs shaped like ``x`` and its operands, kept for the next calls; None (and
    nothing kept) where neither kernel applies to this call."""
    if layer.pointwise:
        if not pointwise_applies(layer, x, routing):
            return None
        plan = ("pointwise", _pointwise_operands(layer, x))
    elif gate is None and applies(layer, x, routing):
        from cc_models.layers.padding import same_padding_for  # here: cc_models.layers imports this module

        padding = (same_padding_for(x, layer.kernel_size, layer.stride, layer.dilation) if layer.dynamic_padding
                   else None)
        plan = ("depthwise", _depthwise_operands(layer, x, padding))
    else:
        return None
    entry = _plans.get(layer)
    if entry is None or entry[0] != weight_key or len(entry[1]) >= MAX_PLANS:
        entry = _plans[layer] = (weight_key, {})  # a server fed ever new image sizes keeps the latest few
    entry[1][(x.shape, torch.get_num_threads())] = plan
    return plan


def _may_run_now(x: torch.Tensor, weight: torch.Tensor, routing: torch.Tensor) -> bool:
    """What :func:`_may_run` and the kernels' input checks ask that can change between calls of one shape (run()
    has stepped aside under torch.compile already; TorchScript never runs this Python)."""
    return (x.is_cpu and routing.is_cpu and x.dtype is torch.float32 and routing.dtype is torch.float32
            and x.is_contiguous(memory_format=torch.channels_last)
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or routing.requires_grad))
            and not torch.jit.is_tracing() and not _dispatch_mode_active() and enabled())


def _depthwise_operands(layer: nn.Module, x: torch.Tensor, padding: tuple[int, int, int, int] | None) -> tuple:
    """The depthwise op's operands after x, routing and bias: (experts, kh, kw, stride, pad_t, pad_l, Ho, Wo, silu)."""
    kh, kw = layer.kernel_size
    stride = layer.stride[0]
    if padding is None:
        ph, pw = layer.padding
        padding = (pw, pw, ph, ph)
    left, right, top, bottom = padding
    ho = (x.shape[-2] + top + bottom - kh) // stride + 1
    wo = (x.shape[-1] + left + right - kw) // stride + 1
    return (_experts_taps_outer(layer), kh, kw, stride, top, left, ho, wo, layer.epilogue_act == "silu")


def depthwise_call(x: torch.Tensor, routing: torch.Tensor, bias: torch.Tensor | None, operands: tuple) -> torch.Tensor:
    """The depthwise op on ``x`` with operands from :func:`_depthwise_operands`."""
    experts, *rest = operands
    return torch.ops.cc_condconv.depthwise(x, experts, routing, bias, *rest)


def pointwise_call(x: torch.Tensor, routing: torch.Tensor, bias: torch.Tensor | None, gate: torch.Tensor | None,
                   operands: tuple) -> torch.Tensor:
    """The pointwise op on ``x`` with operands from :func:`_pointwise_operands`."""
    panels, out_channels, silu, group = operands
    return torch.ops.cc_condconv.pointwise(x, panels, routing, bias, gate, out_channels, silu, group)


@contextlib.contextmanager
def pointwise_op(op: Callable[..., torch.Tensor]):
    """Inside the block, :func:`run`'s pointwise calls go through ``op`` (the pointwise op's signature) instead of
    the library's: ``python -m bench.expert_bound --split`` swaps in timing builds that leave out the mixes or the
    GEMMs (:func:`timing_build`)."""
    global pointwise_call
    library_call = pointwise_call

    def call(x, routing, bias, gate, operands):
        panels, out_channels, silu, group = operands
        return op(x, panels, routing, bias, gate, out_channels, silu, group)

    pointwise_call = call
    try:
        yield
    finally:
        pointwise_call = library_call


def why_no_pointwise() -> str | None:
    """Why the pointwise kernel does not run here (building the library on the first call), or None where it does."""
    if not enabled():
        return f"the CPU kernels are turned off ({ENV_SWITCH}={os.environ.get(ENV_SWITCH)})"
    if not available():
        return f"the CPU kernels could not be built here ({failure()})"
    if not _has_pointwise():
        return f"the pointwise kernel needs an AVX-512 build; this one is {build_isa()}"
    return None


def timing_build(*skip: str) -> Callable[..., torch.Tensor]:
    """The pointwise op of this library compiled again with its mixes (``"mix"``), its GEMMs (``"gemm"``) or both
    left out, under an op namespace of its own: for timing the parts inside a model; its outputs are garbage.
    Raises where the library's pointwise kernel is not built here."""
    if not skip or not set(skip) <= {"mix", "gemm"}:
        raise ValueError(f"skip 'mix', 'gemm' or both, not {skip!r}")
    why = why_no_pointwise()
    if why is not None:
        raise RuntimeError(why)
    parts = sorted(set(skip))
    namespace = "cc_condconv_skip_" + "_".join(parts)
    _compile(f"{build_name()}_skip_{'_'.join(parts)}",
             (f"-DCC_CONDCONV_NS={namespace}", *(f"-DCC_CONDCONV_SKIP_{part.upper()}" for part in parts)))
    return getattr(torch.ops, namespace).pointwise


def block_routing(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
    """A CondConv block's routing, ``sigmoid(mean of x over its pixels @ weight.T + bias)`` [B, E], in one C++ pass
    over a channels_last float32 CPU input; None where the op does not apply (the caller takes the PyTorch form).
    PyTorch's form is four small ops whose calls cost 65-85 us per block at batch 1 (2.7-3.0% of b0_8e and b1_8e)."""
    if (torch.compiler.is_compiling() or bias is None
            or not (x.is_cpu and x.dtype is torch.float32 and x.dim() == 4 and x.numel() > 0
                    and x.is_contiguous(memory_format=torch.channels_last) and weight.is_cpu
                    and weight.dtype is torch.float32 and weight.is_contiguous() and bias.is_cpu
                    and bias.dtype is torch.float32)
            or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad))
            or torch.jit.is_tracing() or _dispatch_mode_active() or not available()):
        return None
    return torch.ops.cc_condconv.routing(x, weight, bias, 1.0 / (x.shape[-2] * x.shape[-1]))


def bias_silu_(out: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``out`` ([B, M, N], contiguous) = SiLU(out + bias) in place, one pass; ``bias``: [N], [B, N] or None."""
    return torch.ops.cc_condconv.bias_silu_(out, bias)


def pointwise(layer: nn.Module, x: torch.Tensor, routing: torch.Tensor, bias: torch.Tensor | None,
              gate: torch.Tensor | None = None) -> torch.Tensor:
    """``layer``'s output for ``x`` (channels_last) with its ``epilogue_act``; the caller checked
    :func:`pointwise_applies`. ``bias``: [Cout] or [B, Cout] or None; ``gate``: [B, Cin] scaling the input
    channels (an SE gate folded into each sample's kernel) or None."""
    return pointwise_call(x, routing, bias, gate, _pointwise_operands(layer, x))


def _pointwise_operands(layer: nn.Module, x: torch.Tensor) -> tuple:
    """The pointwise op's operands after x, routing, bias and gate: (experts' panels, Cout, SiLU, group size)."""
    return (_experts_panels(layer), layer.out_channels, layer.epilogue_act == "silu",
            group_size(layer.in_channels, layer.num_experts, layer.out_channels, x.shape[0], torch.get_num_threads()))


L2_DEFAULT = 2 << 20  # where the cache size cannot be read: the 2 MiB of the Xeon these rules were measured on


@functools.lru_cache(maxsize=1)
def l2_bytes() -> int:
    """This CPU's L2 per core, from Linux's sysfs (the level-2 data or unified cache), else :data:`L2_DEFAULT`."""
    return read_l2_bytes("/sys/devices/system/cpu/cpu0/cache")


def read_l2_bytes(cache_dir: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    for index in sorted(Path(cache_dir).glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if level == "2" and kind in ("Data", "Unified") and size:
            number, unit = (size[:-1], size[-1]) if size[-1] in units else (size, "")
            if number.isdigit() and int(number) > 0:
                return int(number) * units.get(unit, 1)
    return L2_DEFAULT


def group_size(in_channels: int, experts: int, out_channels: int, batch: int, threads: int) -> int:
    """How many samples the pointwise kernel mixes together (each expert vector loaded once for all of them).

    A sample's mix reads the panel's slice of every expert (Cin x E x 48 floats). Where that slice stays in L2 the
    next sample reads it again from there, and grouping only adds the partial sums' round trips (B0's layers with
    4 experts: 0.85-1.02x); where it does not (1152 input channels with 8 experts: 1.77 MB, against a 2 MiB L2)
    every sample reads it from L3, and groups of 8 ran B0's two such layers 1.45-1.6x as fast at batch 32. The
    line is three quarters of this CPU's L2 (:func:`l2_bytes`). Groups stay small enough to leave every thread at
    least four (panel, group) pairs: at batch 8, groups of 4 beat groups of 8 by 1.1x."""
    if in_channels * experts * PANEL * 4 <= l2_bytes() * 3 // 4:
        return 1
    panels = len(panel_spans(out_channels))
    for size in (8, 4, 2):
        if size <= batch and panels * -(-batch // size) >= 4 * threads:
            return size
    return 1
