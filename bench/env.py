"""What a measurement ran on: project commit, torch build, device, threads, allocator, machine fingerprint.

Every run record and every row of the results table carries these, so that a
figure can be traced to the code and the machine that produced it. Many machines
report the same CPU name (every small cloud VM is "AMD EPYC"), so timings are
compared only between runs with the same :func:`fingerprint`: CPU model, usable
cores, ISA flags, allocator setting, torch build, and the GPU when there is one.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from cc_models.runtime import allocator_setting, cpu_state

PROJECT_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Environment:
    """The machine and software a run measured on."""

    git_commit: str
    torch_version: str
    cuda_version: str | None
    python_version: str
    platform: str
    device: str  # "cpu" or "cuda" (resolved from --device)
    device_name: str
    threads: int
    allocator: str  # cc_models.runtime.allocator_setting(): page faults per batch depend on it
    flush_denormals: bool
    fingerprint: dict
    fingerprint_id: str
    cpu_kernels: str = "unknown"  # the C++ CondConv kernels of the CPU inference form: built, off, or why not

    def to_dict(self) -> dict:
        return asdict(self)


def git_commit(project_dir: Path = PROJECT_DIR) -> str:
    """``git rev-parse HEAD`` of the project checkout this code runs from, or ``"unknown"``; with ``-dirty``
    appended (as ``git describe --dirty`` does) when tracked files outside ``results/`` and ``docs/`` (which
    publishing rewrites) differ from that commit: the figures then come from code no commit holds.

    Only when ``project_dir`` is the top of a git work tree: an installed copy inside
    some other repository must not report that repository's commit.
    """
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=project_dir, capture_output=True,
                             text=True, timeout=10)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != project_dir.resolve():
            return "unknown"
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_dir, capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = head.stdout.strip()
    if head.returncode != 0 or not commit:
        return "unknown"
    try:
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                 ":(exclude)results", ":(exclude)docs"], cwd=project_dir, capture_output=True,
                                text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return commit
    return f"{commit}-dirty" if status.returncode == 0 and status.stdout.strip() else commit


# ISA extensions that change which kernels torch and oneDNN pick (x86 "flags", Arm "Features").
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "asimddp", "sve", "sve2",
             "bf16", "i8mm")


@functools.lru_cache(maxsize=None)
def _cpuinfo() -> dict[str, str]:
    """The first value of each /proc/cpuinfo field (Linux); empty elsewhere."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    return fields


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (Linux), else what ``platform`` knows."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown CPU"


def isa_flags() -> list[str]:
    """The :data:`ISA_FLAGS` this CPU has, in that order."""
    info = _cpuinfo()
    present = set((info.get("flags") or info.get("features") or "").split())
    return [flag for flag in ISA_FLAGS if flag in present]


def usable_cores() -> int:
    """CPUs this process may run on (its affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def torch_build() -> str:
    """torch's version, GPU toolkit and the CPU kernels it dispatches to on this machine."""
    gpu = f"CUDA {torch.version.cuda}" if torch.version.cuda else \
        f"ROCm {torch.version.hip}" if getattr(torch.version, "hip", None) else "no GPU toolkit"
    return f"torch {torch.__version__}, {gpu}, CPU capability {torch.backends.cpu.get_cpu_capability()}"


def fingerprint(device: str) -> dict:
    """What makes two timings comparable, beyond dtype and threads (recorded in every run)."""
    found = {"cpu": cpu_name(), "cores": usable_cores(), "isa": isa_flags(), "allocator": allocator_setting(),
             "torch_build": torch_build()}
    if device == "cuda":
        found["gpu"] = device_name(device)
    return found


def fingerprint_id(found: dict) -> str:
    """A short stable id of a :func:`fingerprint` (12 hex digits of its SHA-256)."""
    return hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()[:12]


def cuda_unavailable_reason() -> str | None:
    """``None`` when a CUDA device can be used, else why not."""
    if not torch.backends.cuda.is_built():
        return f"this torch build ({torch.__version__}) has no CUDA support"
    if not torch.cuda.is_available():
        return "no CUDA device available (torch.cuda.is_available() is False)"
    return None


def resolve_device(requested: str) -> tuple[str, str | None]:
    """``(device, why_not_cuda)`` for ``--device cpu|cuda|auto``.

    ``auto`` is ``cuda`` when available, else ``cpu``. ``cuda`` without a GPU stays
    ``cuda`` with the reason: the device-bound checks are then skipped with it.
    """
    why_not = cuda_unavailable_reason()
    if requested == "auto":
        return ("cuda" if why_not is None else "cpu"), why_not
    if requested == "cuda":
        return "cuda", why_not
    return "cpu", None


def device_name(device: str) -> str:
    if device == "cuda" and cuda_unavailable_reason() is None:
        return torch.cuda.get_device_name(torch.cuda.current_device())
    if device == "cuda":
        return "unavailable"
    return cpu_name()


def cpu_kernels_state(device: str) -> str:
    """Whether ``cc_models.cpu_kernels`` serves the depthwise CondConvs here (building it if needed): the CPU
    timings of ours depend on it."""
    if device != "cpu":
        return f"not used on {device}"
    from cc_models import cpu_kernels

    if not cpu_kernels.enabled():
        return f"off ({cpu_kernels.ENV_SWITCH}=0)"
    if cpu_kernels.available():
        return f"built ({cpu_kernels.build_name()}, {cpu_kernels.build_isa()})"
    return f"unavailable: {cpu_kernels.failure()}"


def collect(device: str) -> Environment:
    cpu = cpu_state()
    found = fingerprint(device)
    return Environment(
        git_commit=git_commit(),
        torch_version=torch.__version__,
        cuda_version=torch.version.cuda,
        python_version=platform.python_version(),
        platform=f"{platform.system()} {platform.release()} {platform.machine()}",
        device=device,
        device_name=device_name(device),
        threads=cpu.threads,
        allocator=found["allocator"],
        flush_denormals=cpu.flush_denormals,
        fingerprint=found,
        fingerprint_id=fingerprint_id(found),
        cpu_kernels=cpu_kernels_state(device),
    )


def is_tty(stream=None) -> bool:
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
