"""oneDNN convolutions for the CPU inference form: weights packed once, the activation as a post-op.

A fused model (``model.eval().fuse()``) runs its plain convolutions on CPU through
``torch.ops.mkldnn._convolution_pointwise``, the op torch.compile's CPU backend emits
for the same pattern:

* the weights are reordered into oneDNN's blocked layout once per layer and kept
  (``F.conv2d`` reorders them on every call, 30-40% of a late B0 layer's time at batch 1);
* the SiLU after the conv runs in oneDNN's epilogue, while the output is still in
  registers, instead of another pass over the activation (1.7x on B0's first 1x1
  expansion at batch 32, 2 threads, where that pass is memory-bound; about even at batch 1:
  ``python -m bench.conv_forms``).

Only for what it is measured on: float32, channels_last inputs, no autograd, not
under tracing, scripting or torch.compile (those see the ordinary ops), on a torch
built with oneDNN for x86 (not ACL). Everything else takes ``F.conv2d``.

Packed weights are opaque tensors that cannot be copied or pickled, so they live in
a side table keyed by the layer (``copy.deepcopy``/``pickle`` of a model never see
them), one per input shape (the layout oneDNN picks depends on it), and are rebuilt
when the layer's weight changes (new tensor, or in place).
"""
from __future__ import annotations

import functools
import threading
import weakref

import torch
import torch.nn as nn

POST_OP_MIN_ELEMENTS = 1 << 20  # see grouped_conv2d
_POST_OPS = {None: "none", "silu": "swish"}

# layer -> {(weight identity, kernel pad, input shape): packed weight}, oldest first
_packed: weakref.WeakKeyDictionary[nn.Module, dict[tuple, torch.Tensor]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
SHAPES_PER_LAYER = 4  # packed forms kept per layer (one per input shape in use; a copy of the weight each)


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """True when this torch has oneDNN's fused convolution and its weight packing (x86 oneDNN, not ACL)."""
    try:
        ops = torch.ops.mkldnn
        if not torch.backends.mkldnn.is_available():
            return False
        ops._convolution_pointwise, ops._reorder_convolution_weight  # noqa: B018  (raise if missing)
        return not ops._is_mkldnn_acl_supported()
    except (AttributeError, RuntimeError):
        return False


def applies(x: torch.Tensor, weight: torch.Tensor, *, contiguous_too: bool = False) -> bool:
    """Whether a convolution of ``x`` by ``weight`` may take the oneDNN path: ``x`` channels_last (or,
    with ``contiguous_too``, NCHW-contiguous: CondConv's batch-grouped form, whose weights are not packed)."""
    layout_ok = x.is_contiguous(memory_format=torch.channels_last) or (contiguous_too and x.is_contiguous())
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.dim() == 4 and layout_ok and x.numel() > 0
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            and not torch.jit.is_tracing() and not torch.jit.is_scripting() and not torch.compiler.is_compiling()
            and torch.backends.mkldnn.enabled and available())


def _packed_weight(layer: nn.Module, x: torch.Tensor, kernel_pad: tuple[int, int, int, int],
                   padding: tuple[int, int]) -> torch.Tensor:
    """``layer``'s weight in the oneDNN layout chosen for ``x``'s shape. Per shape: a layout packed for one
    batch size gives the same results at another but can run 5x slower there (1x1 convs on 8x8 maps)."""
    weight = layer.weight
    version = -1 if weight.is_inference() else weight._version  # inference tensors keep no version counter
    key = ((weight.data_ptr(), version, tuple(weight.shape)), kernel_pad, tuple(x.shape))
    cache = _packed.get(layer)
    packed = cache.get(key) if cache is not None else None
    if packed is not None:  # the hot path takes no lock
        return packed
    with _lock:  # threads sharing a model: one packs, and eviction never races an insert
        cache = _packed.setdefault(layer, {})
        packed = cache.get(key)
        if packed is None:
            w = torch.nn.functional.pad(weight.detach(), kernel_pad) if any(kernel_pad) else weight.detach()
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                w.contiguous(), list(padding), list(layer.stride), list(layer.dilation), layer.groups, list(x.shape))
            while len(cache) >= SHAPES_PER_LAYER:
                del cache[next(iter(cache))]  # the oldest
            cache[key] = packed
    return packed


def conv2d(layer: nn.Conv2d, x: torch.Tensor, padding: tuple[int, int],
           kernel_pad: tuple[int, int, int, int] = (0, 0, 0, 0), act: str | None = None) -> torch.Tensor:
    """``act(conv(x))`` for ``layer`` (an ``nn.Conv2d``) with symmetric ``padding``, its kernel grown by
    ``kernel_pad`` (F.pad order, see ``padding_in_kernel``), through oneDNN; the caller checked :func:`applies`."""
    weight = _packed_weight(layer, x, kernel_pad, padding)
    return torch.ops.mkldnn._convolution_pointwise(
        x, weight, layer.bias, list(padding), list(layer.stride), list(layer.dilation), layer.groups,
        _POST_OPS[act], [], "")


def grouped_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
                   padding: tuple[int, int], groups: int, act: str | None) -> torch.Tensor:
    """``act(F.conv2d(x, weight, ...))`` for a weight used once (CondConv's per-sample kernels): not packed.

    The SiLU runs as a post-op only on large inputs: on B0's depthwise CondConvs the post-op saved 11% at
    batch 32 (4.2M elements, memory-bound) but cost 10-40% at batch 1 (56k elements) against an in-place
    SiLU after the conv (2 threads, ``oneDNN`` nhwc depthwise)."""
    post_op = act if x.numel() >= POST_OP_MIN_ELEMENTS else None
    out = torch.ops.mkldnn._convolution_pointwise(
        x, weight, bias, list(padding), list(stride), [1, 1], groups, _POST_OPS[post_op], [], "")
    return torch.nn.functional.silu(out, inplace=True) if act is not None and post_op is None else out
