"""``cc_models.hugepages``: zeroed tensors in transparent huge pages, judged by the kernel's own account of the
mapping (``/proc/self/smaps``: ``VmFlags`` ``hg`` and ``AnonHugePages``)."""
from __future__ import annotations

import gc
import re

import pytest
import torch

from cc_models import hugepages

needs_thp = pytest.mark.skipif(not hugepages.available(), reason="no transparent huge pages on this system")


def _own_mapping(t: torch.Tensor) -> bool:
    """Whether ``t`` sits in a mapping ``zeros`` made for it (its storage: the tensor plus a huge page of slack).
    Not ``advised``: torch's own allocator advises its large blocks too once ``tune_cpu`` ran in this process."""
    return t.untyped_storage().nbytes() == t.numel() * t.element_size() + hugepages.HUGE_PAGE


@pytest.fixture
def fresh_available():
    hugepages.available.cache_clear()
    yield
    hugepages.available.cache_clear()


@needs_thp
def test_large_tensor_lands_in_huge_pages_zeroed():
    t = hugepages.zeros((3, 1000, 1000))
    assert t.shape == (3, 1000, 1000) and t.dtype == torch.float32 and t.is_contiguous()
    assert t.data_ptr() % hugepages.HUGE_PAGE == 0
    assert torch.count_nonzero(t) == 0
    assert _own_mapping(t) and hugepages.advised(t)
    t.fill_(1.5)  # first touch: the kernel backs the advised range with 2 MiB pages where it has them
    assert hugepages.huge_bytes(t) >= hugepages.HUGE_PAGE
    assert t.sum().item() == 1.5 * 3e6


@needs_thp
def test_mapping_is_released_with_the_last_view():
    t = hugepages.zeros((1 << 20,))
    view = t[10:20]
    address = t.data_ptr()
    del t
    gc.collect()
    assert _advised_at(address), "a view keeps the mapping"
    del view
    gc.collect()
    assert not _advised_at(address), "unmapped with the last view"


def _advised_at(address: int) -> bool:
    return "hg" in hugepages._mapping(address).get("VmFlags", "").split()


def test_small_tensor_is_an_ordinary_one():
    t = hugepages.zeros((100, 100), dtype=torch.float64)
    assert t.dtype == torch.float64 and torch.count_nonzero(t) == 0
    assert not _own_mapping(t)


@needs_thp
def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv(hugepages.ENV_SWITCH, "0")
    t = hugepages.zeros((1 << 21,))
    assert torch.count_nonzero(t) == 0 and not _own_mapping(t)


@pytest.mark.parametrize("setting, expected", [("always [madvise] never", True), ("[always] madvise never", True),
                                               ("always madvise [never]", False)])
def test_availability_follows_the_system_setting(tmp_path, monkeypatch, fresh_available, setting, expected):
    path = tmp_path / "enabled"
    path.write_text(setting + "\n")
    monkeypatch.setattr(hugepages, "THP_SETTING", path)
    assert hugepages.available() is expected
    t = hugepages.zeros((1 << 21,))
    assert torch.count_nonzero(t) == 0 and _own_mapping(t) is expected


def test_unreadable_setting_means_ordinary_tensors(tmp_path, monkeypatch, fresh_available):
    monkeypatch.setattr(hugepages, "THP_SETTING", tmp_path / "missing")
    assert hugepages.available() is False
    assert not _own_mapping(hugepages.zeros((1 << 21,)))


@pytest.mark.parametrize("argv, message", [
    (["--batch-sizes", "0"], "--batch-sizes takes positive integers"),
    (["--rounds", "0"], "--rounds and --threads >= 1"),
    (["no_such_model"], "unknown model id(s): no_such_model"),
])
def test_huge_pages_bench_usage_errors(argv, message, capsys):
    from bench.huge_pages import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
@needs_thp
def test_huge_pages_bench_times_the_two_copies_and_the_plain_model():
    import subprocess
    import sys

    from cc_models import cpu_kernels

    if not (cpu_kernels.available() and cpu_kernels._has_pointwise()):
        pytest.skip("the pointwise kernel is built for AVX-512 CPUs only")
    proc = subprocess.run([sys.executable, "-m", "bench.huge_pages", "tf_efficientnet_cc_b0_4e", "--batch-sizes", "1",
                           "--rounds", "2", "--threads", "1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    layouts, row = proc.stdout.strip().splitlines()[-2:]
    total, huge, ordinary = (float(v) for v in re.findall(r"([\d.]+) MiB", layouts))
    assert 0 < huge <= total  # B0's pointwise layouts of 2 MiB and more are in huge pages
    assert ordinary < huge  # the ordinary copy's, in torch's memory without tune_cpu's huge pages
    assert row.strip().startswith("bs=1:") and "huge / ordinary" in row and "/ plain" in row
