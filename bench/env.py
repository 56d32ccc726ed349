"""What a measurement ran on: project commit, torch/CUDA versions, device, threads, allocator.

Every run record and every row of the results table carries these, so that a
figure can be traced to the code and the machine that produced it.
"""
from __future__ import annotations

import functools
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

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

    def to_dict(self) -> dict:
        return asdict(self)


def git_commit(project_dir: Path = PROJECT_DIR) -> str:
    """``git rev-parse HEAD`` of the project checkout this code runs from, or ``"unknown"``.

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
    return commit if head.returncode == 0 and commit else "unknown"


@functools.lru_cache(maxsize=None)
def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


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


def collect(device: str) -> Environment:
    from cc_models.runtime import cpu_state

    cpu = cpu_state()
    return Environment(
        git_commit=git_commit(),
        torch_version=torch.__version__,
        cuda_version=torch.version.cuda,
        python_version=platform.python_version(),
        platform=f"{platform.system()} {platform.release()} {platform.machine()}",
        device=device,
        device_name=device_name(device),
        threads=cpu.threads,
        allocator=cpu.allocator,
        flush_denormals=cpu.flush_denormals,
    )


def is_tty(stream=None) -> bool:
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
