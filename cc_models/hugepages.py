"""Zeroed CPU tensors in memory that Linux backs with 2 MiB pages (transparent huge pages, ``MADV_HUGEPAGE``).

The CPU kernels' expert layouts are read once per forward pass at batch 1, tens of MB of them (b0_8e: 80 MB), and
on a 4 KiB page every 4 KiB of that stream is a TLB miss whose page walk is itself a cache miss. In 2 MiB pages
they read faster: the same model with its pointwise layouts in huge pages ran 1.04-1.15x at batch 1 and
1.00-1.06x at batch 32 (b0_8e, 2 threads, interleaved in one process; ``bench/huge_pages.py``).

Each tensor gets its own fresh anonymous mapping, advised before it is touched, so the kernel can give it huge
pages at the first write; a heap block reused from earlier allocations would already have 4 KiB pages. Below one
huge page, or where the system says ``never`` (``/sys/kernel/mm/transparent_hugepage/enabled``) or the platform
has no ``madvise``, the tensor is an ordinary one: the values are the same either way.
``CC_MODELS_HUGE_PAGES=0`` makes them all ordinary.
"""
from __future__ import annotations

import functools
import mmap
import os
from pathlib import Path

import torch

HUGE_PAGE = 2 << 20
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")
ENV_SWITCH = "CC_MODELS_HUGE_PAGES"


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether an advised mapping can get huge pages here: Linux with THP ``always`` or ``madvise``."""
    if not hasattr(mmap, "MADV_HUGEPAGE"):
        return False
    try:
        setting = THP_SETTING.read_text()
    except OSError:
        return False
    return "[never]" not in setting and "[" in setting


def zeros(shape: tuple[int, ...] | list[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A zeroed, contiguous CPU tensor; in huge pages where :func:`enabled`, :func:`available` and it spans at
    least one."""
    shape = tuple(shape)
    nbytes = torch.Size(shape).numel() * dtype.itemsize
    if nbytes < HUGE_PAGE or not enabled() or not available():
        return torch.zeros(shape, dtype=dtype)
    # One huge page more than needed, to start the tensor on a 2 MiB boundary; the slack is never touched, so it
    # costs address space only. Only whole huge pages are advised: the last partial one stays in 4 KiB pages
    # rather than costing up to 2 MiB of memory more. Anonymous pages are zero-filled: no pass to zero them.
    buffer = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    raw = torch.frombuffer(buffer, dtype=torch.uint8)  # keeps the mapping alive as long as a view of it lives
    offset = -raw.data_ptr() % HUGE_PAGE
    try:
        buffer.madvise(mmap.MADV_HUGEPAGE, offset, nbytes // HUGE_PAGE * HUGE_PAGE)
    except OSError:  # refused (an old or restricted kernel): still a valid zeroed tensor
        pass
    return raw[offset:offset + nbytes].view(dtype).view(shape)


def _mapping(address: int) -> dict[str, str]:
    """The ``/proc/self/smaps`` fields of the mapping that holds ``address`` (empty where it cannot be read)."""
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return {}
    fields: dict[str, str] | None = None
    for line in lines:
        head = line.split(" ", 1)[0]
        if "-" in head and ":" not in head:  # a mapping's header: "start-end perms offset dev inode path"
            if fields is not None:
                return fields
            start, end = (int(part, 16) for part in head.split("-"))
            fields = {} if start <= address < end else None
        elif fields is not None:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields or {}


def huge_bytes(tensor: torch.Tensor) -> int:
    """Bytes of the mapping holding ``tensor``'s first element that the kernel backs with huge pages
    (``AnonHugePages``); 0 where that cannot be read."""
    value = _mapping(tensor.data_ptr()).get("AnonHugePages", "0 kB").split()[0]
    return int(value) * 1024 if value.isdigit() else 0


def advised(tensor: torch.Tensor) -> bool:
    """Whether the mapping holding ``tensor``'s first element is advised for huge pages (``hg`` in its
    ``VmFlags``): the kernel may then back it with them, as memory allows."""
    return "hg" in _mapping(tensor.data_ptr()).get("VmFlags", "").split()
