"""Put this process's CPU runtime in a defined, fast state for inference: allocator, threads, denormals.

>>> import cc_models.runtime
>>> cc_models.runtime.tune_cpu(threads=2)      # once, at process start, before building models
CpuState(allocator='glibc-tuned(mmap_threshold=1GiB,trim_threshold=1GiB)+thp', threads=2, flush_denormals=True, ...)

Why the allocator: glibc's malloc serves every block above its mmap threshold
(128 KiB, growing dynamically to at most 32 MiB) from fresh pages and gives them
back on free, so every batch pays a page fault per 4 KiB of each large
activation. On a 2-core Xeon (torch 2.14.1, fp32, 2 threads) our fused
CondConv-B0 faulted ~195,000 times per batch of 32 and ran about 2x slower
than with the thresholds raised (``bench/allocator.py`` measures it). Raising
``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` to 1 GiB keeps freed activations
in the heap for the next batch. A preloaded jemalloc or tcmalloc is honoured
as it is (glibc's settings would not apply to it); ``bench/allocator.py``
compares them too.

The glibc setting also pins the mmap threshold: otherwise anything the process
did earlier (a freed large block) moves the dynamic threshold and with it every
later timing. Apply it before the models allocate.

Why huge pages (``+thp``): with the blocks kept, what remains of the allocator's
cost is the TLB: a batch-32 activation of B0 spans thousands of 4 KiB pages.
Torch's allocator advises transparent huge pages for its blocks of 2 MiB and more
when ``THP_MEM_ALLOC_ENABLE`` is set at its first allocation; ``tune_cpu`` sets it
for that moment. At batch 32 ours ran 1.10-1.19x and timm 1.02-1.10x over the
glibc thresholds alone (``bench/allocator.py``, settings ``thresholds`` and ``tuned``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import asdict, dataclass

import torch

from cc_models import hugepages

GIB = 1 << 30
THP_ENV = "THP_MEM_ALLOC_ENABLE"
# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_PRELOADED = {"jemalloc": "libjemalloc", "tcmalloc": "libtcmalloc"}

_glibc_tuned: dict[str, int] = {}  # what tune_cpu set through mallopt in this process
_torch_thp: bool | None = None  # torch_huge_pages(), once probed


@dataclass(frozen=True)
class CpuState:
    """What :func:`tune_cpu` left in place (also what the bench records with every run)."""

    allocator: str  # allocator_setting()
    threads: int
    flush_denormals: bool
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (mallopt exists and means what we think), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # musl and others lack it
        libc.mallopt
    except (OSError, AttributeError):
        return None
    return libc


def _preloaded_allocator() -> str | None:
    """"jemalloc" or "tcmalloc" when such a malloc is mapped into this process (LD_PRELOAD), else None."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            maps = f.read()
    except OSError:
        maps = os.environ.get("LD_PRELOAD", "")
    for name, lib in _PRELOADED.items():
        if lib in maps:
            return name
    return None


def _size(n: int) -> str:
    return f"{n // GIB}GiB" if n % GIB == 0 else f"{n // (1 << 20)}MiB" if n % (1 << 20) == 0 else str(n)


def _tunables_from_env() -> dict[str, int]:
    """glibc malloc thresholds set from outside (GLIBC_TUNABLES or the MALLOC_*_ aliases)."""
    found: dict[str, int] = {}
    for item in os.environ.get("GLIBC_TUNABLES", "").split(":"):
        key, _, value = item.partition("=")
        if key in ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold") and value.isdigit():
            found[key.rsplit(".", 1)[1]] = int(value)
    for key, alias in (("mmap_threshold", "MALLOC_MMAP_THRESHOLD_"), ("trim_threshold", "MALLOC_TRIM_THRESHOLD_")):
        if os.environ.get(alias, "").isdigit():
            found.setdefault(key, int(os.environ[alias]))
    return found


def allocator_setting() -> str:
    """A short, stable label of this process's allocator state.

    ``"glibc-tuned(mmap_threshold=1GiB,trim_threshold=1GiB)"`` after :func:`tune_cpu`,
    ``"glibc-tunables(...)"`` when set from the environment, ``"glibc-default"``,
    ``"jemalloc(LD_PRELOAD)"``/``"tcmalloc(LD_PRELOAD)"``, or ``"system(<platform>)"`` elsewhere; with
    ``"+thp"`` when torch's allocator advises huge pages (:func:`torch_huge_pages`).
    """
    return _malloc_setting() + ("+thp" if torch_huge_pages() else "")


def _malloc_setting() -> str:
    preloaded = _preloaded_allocator()
    if preloaded:
        return f"{preloaded}(LD_PRELOAD)"
    if _glibc() is None:
        return f"system({sys.platform})"
    settings, kind = (_glibc_tuned, "glibc-tuned") if _glibc_tuned else (_tunables_from_env(), "glibc-tunables")
    if not settings:
        return "glibc-default"
    return f"{kind}({','.join(f'{k}={_size(v)}' for k, v in sorted(settings.items()))})"


def tune_glibc_malloc(mmap_threshold: int = GIB, trim_threshold: int = GIB) -> str | None:
    """Raise glibc's mmap and trim thresholds (idempotent); None when done, else why not."""
    if _preloaded_allocator():
        return f"{_preloaded_allocator()} is preloaded: glibc malloc settings would not apply, left as is"
    libc = _glibc()
    if libc is None:
        return f"not glibc on {sys.platform}: allocator left as is"
    # mallopt returns 1 on success, 0 when glibc refuses the value.
    if not libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(min(mmap_threshold, 2**31 - 1))):
        return f"glibc refused mmap_threshold={mmap_threshold}: allocator left as is"
    _glibc_tuned["mmap_threshold"] = mmap_threshold
    if libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(min(trim_threshold, 2**31 - 1))):
        _glibc_tuned["trim_threshold"] = trim_threshold
    return None


def enable_torch_huge_pages() -> str | None:
    """Have torch's CPU allocator advise ``MADV_HUGEPAGE`` for its blocks of 2 MiB and more: it reads
    ``THP_MEM_ALLOC_ENABLE`` once, at its first allocation, so this sets it for one probe allocation (the
    environment is restored after: child processes do not inherit it). None when in effect, else why
    not. Large activations then cost a TLB entry per 2 MiB instead of per 4 KiB: ``python -m bench.allocator``
    measures it against the glibc thresholds alone."""
    if not hugepages.available():
        return f"no transparent huge pages here ({hugepages.THP_SETTING}): torch's allocator left as is"
    value = os.environ.get(THP_ENV)
    if value is not None and value.strip().lower() in ("0", "false", "off", "no", ""):
        return f"{THP_ENV}={value!r} in the environment: torch's huge pages left off"
    os.environ[THP_ENV] = "1"
    try:
        on = torch_huge_pages()  # its probe allocation makes torch decide, if it has not already
    finally:  # decided for good now: child processes should not inherit the switch
        if value is None:
            del os.environ[THP_ENV]
        else:
            os.environ[THP_ENV] = value
    if on:
        return None
    return (f"torch allocated before tune_cpu, so its allocator keeps 4 KiB pages; call tune_cpu first or set "
            f"{THP_ENV}=1 in the environment")


def torch_huge_pages() -> bool:
    """Whether torch's CPU allocator advises huge pages in this process (``hg`` on a fresh 4 MiB block's
    mapping). Torch decides once, at its first allocation, from ``THP_MEM_ALLOC_ENABLE``: unless it is set (or
    :func:`enable_torch_huge_pages` probed already) the answer is no and nothing is allocated to find out, since
    asking first must not lock torch's choice; otherwise one probe decides and the answer is kept."""
    global _torch_thp
    if _torch_thp is None:
        if os.environ.get(THP_ENV, "").strip().lower() not in ("1", "true", "on", "yes") or not hugepages.available():
            return False
        _torch_thp = hugepages.advised(torch.empty(2 * hugepages.HUGE_PAGE, dtype=torch.uint8))
    return _torch_thp


def cpu_state() -> CpuState:
    """The allocator, threads and denormal handling in effect now (changes nothing)."""
    return CpuState(allocator=allocator_setting(), threads=torch.get_num_threads(),
                    flush_denormals=_flushes_denormals())


def _flushes_denormals() -> bool:
    tiny = torch.tensor([1e-40], dtype=torch.float32)  # a float32 denormal
    return bool((tiny * 1.0).item() == 0.0)


def tune_cpu(threads: int | None = None, *, allocator: bool = True, huge_pages: bool = True,
             flush_denormals: bool = True) -> CpuState:
    """Set this process up for fast CPU inference and say what was done. Idempotent; safe anywhere.

    * ``allocator``: raise glibc malloc's mmap and trim thresholds to 1 GiB (Linux/glibc; a
      preloaded jemalloc/tcmalloc is left alone). Call before the models and inputs allocate.
    * ``huge_pages``: have torch's CPU allocator advise transparent huge pages for its blocks of 2 MiB
      and more (:func:`enable_torch_huge_pages`). Torch decides at its first CPU allocation, so this
      only takes effect when ``tune_cpu`` comes before any tensor; the notes say when it came too late.
    * ``threads``: ``torch.set_num_threads(threads)``; None keeps torch's (one per core).
    * ``flush_denormals``: treat float32 denormals as zero (``torch.set_flush_denormal``); denormal
      arithmetic is up to 100x slower on x86 and changes no result beyond ~1e-38.

    Returns the resulting :class:`CpuState`; its ``notes`` say what could not be done.
    """
    notes = []
    if allocator:
        why_not = tune_glibc_malloc()
        if why_not:
            notes.append(why_not)
    if huge_pages:
        why_not = enable_torch_huge_pages()
        if why_not:
            notes.append(why_not)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    if flush_denormals and not torch.set_flush_denormal(True):
        notes.append("this CPU cannot flush denormals")
    state = cpu_state()
    return CpuState(state.allocator, state.threads, state.flush_denormals, tuple(notes))
