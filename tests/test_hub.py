"""cc_models.hub against a Hub and CDN on 127.0.0.1: download, cache, offline, integrity, faults, typed errors."""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from registry import HubLocation

from cc_models import hub
from cc_models.errors import (
    ChecksumMismatchError,
    CorruptCheckpointError,
    OfflineError,
    UnpinnedWeightsWarning,
    WeightsError,
    WeightsNotFoundError,
)

from hub_server import FakeHub, Fault, fake_hub, go_offline, hub_env, set_endpoint, sha256  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore::cc_models.errors.UnpinnedWeightsWarning")

REPO = "test-org/tiny.in1k"
FILE = "model.safetensors"


@pytest.fixture
def payload() -> bytes:
    g = torch.Generator().manual_seed(0)
    return save({"weight": torch.randn(4, 3, generator=g), "bias": torch.randn(4, generator=g)})


@pytest.fixture
def served(fake_hub, payload) -> FakeHub:
    fake_hub.add_file(REPO, FILE, payload)
    return fake_hub


def location(**kw) -> HubLocation:
    return HubLocation(**{"repo_id": REPO, "filename": FILE, "revision": "main", "sha256": None, **kw})


def cache_files(hf_home: Path) -> list[str]:
    root = hf_home / "hub"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()) \
        if root.exists() else []


def blobs_and_snapshots(hf_home: Path) -> list[str]:
    return [p for p in cache_files(hf_home) if "/blobs/" in p or "/snapshots/" in p]


# ------------------------------------------------------------------------------------------------ the happy path


def test_download_fetches_through_the_hub_protocol_and_verifies(served, payload, hub_env):
    with pytest.warns(UnpinnedWeightsWarning, match="pins no SHA-256"):
        f = hub.fetch(location())
    assert f.path.read_bytes() == payload
    assert f.sha256 == sha256(payload)
    assert "X-Linked-Etag" in f.verified_against
    assert f.commit_hash == served.refs[REPO]["main"]
    # the standard cache layout: refs/main -> commit, snapshot symlink -> blob named by the LFS sha256
    repo_dir = hub_env / "hub" / "models--test-org--tiny.in1k"
    assert (repo_dir / "refs" / "main").read_text() == f.commit_hash
    assert f.path.is_symlink() and Path(os.path.realpath(f.path)) == repo_dir / "blobs" / sha256(payload)
    # one HEAD on the Hub, then one GET on the CDN origin
    assert served.count("HEAD", f"/{REPO}/resolve/main/{FILE}") == 1
    assert served.count("GET", "/cdn/") == 1


def test_second_call_offline_loads_from_the_cache_without_network(served, payload, monkeypatch):
    hub.fetch(location())
    served.stop()
    go_offline(monkeypatch)
    f = hub.fetch(location())
    assert f.path.read_bytes() == payload
    assert f.sha256 == sha256(payload) and "LFS SHA-256" in f.verified_against  # the blob's digest name


def test_second_online_call_uses_the_cache(served):
    hub.fetch(location())
    hub.fetch(location())
    assert served.count("GET", "/cdn/") == 1


def test_index_sha256_is_checked_when_present(served, payload):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnpinnedWeightsWarning)  # pinned: no warning
        f = hub.fetch(location(sha256=sha256(payload)))
    assert f.verified_against == "model index"


def test_pinned_commit_revision(served, payload, monkeypatch):
    commit = served.refs[REPO]["main"]
    f = hub.fetch(location(), revision=commit)
    assert f.commit_hash == commit and f.path.read_bytes() == payload
    served.stop()
    go_offline(monkeypatch)
    assert hub.fetch(location(), revision=commit).path == f.path


def test_branch_moving_downloads_the_new_commit(served, payload):
    first = hub.fetch(location())
    new_payload = save({"weight": torch.ones(4, 3), "bias": torch.zeros(4)})
    new_commit = served.push(REPO)
    served.add_file(REPO, FILE, new_payload)
    second = hub.fetch(location())
    assert second.commit_hash == new_commit != first.commit_hash
    assert second.path.read_bytes() == new_payload


def test_non_lfs_file_downloads(fake_hub):
    data = save({"x": torch.arange(3.0)})
    fake_hub.add_file(REPO, FILE, data, lfs=False)
    f = hub.fetch(location())
    assert f.path.read_bytes() == data
    assert "git blob id" in f.verified_against


def test_non_lfs_file_whose_body_does_not_match_its_git_oid(fake_hub, hub_env):
    data = save({"x": torch.arange(3.0)})
    fake_hub.add_file(REPO, FILE, data, lfs=False, body=save({"x": torch.ones(3)}))
    with pytest.raises(ChecksumMismatchError, match="git blob id"):
        hub.fetch(location())
    assert blobs_and_snapshots(hub_env) == []


def test_lfs_redirect_without_linked_etag_is_not_trusted(fake_hub, payload, hub_env):
    fake_hub.add_file(REPO, FILE, payload)
    fake_hub.strip_headers = ("X-Linked-Etag",)  # the blob is then named by the pointer's git oid
    with pytest.raises(ChecksumMismatchError):
        hub.fetch(location())
    # pinned, the same answer loads: the index's SHA-256 is the authority
    assert hub.fetch(location(sha256=sha256(payload))).path.read_bytes() == payload


# ------------------------------------------------------------------------------------------------ not found


def test_missing_repo(fake_hub):
    with pytest.raises(WeightsNotFoundError) as err:
        hub.fetch(location(repo_id="test-org/nope"))
    assert err.value.kind == "repo"
    assert "test-org/nope" in str(err.value) and "checkpoint_path=" in str(err.value)


def test_missing_file(served):
    with pytest.raises(WeightsNotFoundError) as err:
        hub.fetch(location(filename="nope.safetensors"))
    assert err.value.kind == "file" and "nope.safetensors" in str(err.value)


def test_missing_file_remembered_offline(served, monkeypatch):
    with pytest.raises(WeightsNotFoundError):
        hub.fetch(location(filename="nope.safetensors"))
    go_offline(monkeypatch)
    with pytest.raises((WeightsNotFoundError, OfflineError)) as err:
        hub.fetch(location(filename="nope.safetensors"))
    assert "HF_HUB_OFFLINE" in str(err.value)


def test_missing_revision(served):
    with pytest.raises(WeightsNotFoundError) as err:
        hub.fetch(location(), revision="v9.9")
    assert err.value.kind == "revision" and "'v9.9'" in str(err.value)


# ------------------------------------------------------------------------------------------------ offline


def test_offline_and_not_cached(served, monkeypatch):
    go_offline(monkeypatch)
    with pytest.raises(OfflineError) as err:
        hub.fetch(location())
    msg = str(err.value)
    assert "HF_HUB_OFFLINE" in msg and "checkpoint_path=" in msg
    assert served.count() == 0  # offline means no request at all


def test_stopped_server_not_cached_ends_at_the_deadline(served, monkeypatch):
    monkeypatch.setenv("CC_HUB_DOWNLOAD_DEADLINE", "0.5")  # huggingface_hub retries a refused connection
    served.stop()
    start = time.monotonic()
    with pytest.raises(OfflineError) as err:
        hub.fetch(location())
    assert time.monotonic() - start < 5
    assert "CC_HUB_DOWNLOAD_DEADLINE" in str(err.value) and served.endpoint in str(err.value)


def test_stopped_server_falls_back_to_cache(served, payload):
    hub.fetch(location())
    served.stop()
    f = hub.fetch(location())
    assert f.path.read_bytes() == payload


def test_server_errors_count_as_unreachable(hub_env, monkeypatch):
    # an endpoint that is not a Hub at all (no X-Repo-Commit) -> huggingface_hub's FileMetadataError
    with FakeHub() as other:
        other.add_static(f"/{REPO}/resolve/main/{FILE}", b"not a hub")
        set_endpoint(monkeypatch, other.endpoint)
        with pytest.raises(OfflineError) as err:
            hub.fetch(location())
    assert "Hub API" in str(err.value) and "X-Repo-Commit" in str(err.value)


# ------------------------------------------------------------------------------------------------ integrity


def test_corrupted_transfer_is_rejected_and_not_cached(fake_hub, payload, hub_env, monkeypatch):
    bad = bytearray(payload)
    bad[-1] ^= 0xFF
    fake_hub.add_file(REPO, FILE, payload, body=bytes(bad))  # metadata truthful, bytes flipped
    with pytest.raises(ChecksumMismatchError) as err:
        hub.fetch(location())
    assert err.value.expected == sha256(payload) and err.value.actual == sha256(bytes(bad))
    assert "removed from the cache" in str(err.value)
    assert blobs_and_snapshots(hub_env) == []
    # later offline calls do not trust anything
    go_offline(monkeypatch)
    with pytest.raises(OfflineError):
        hub.fetch(location())


def test_wrong_index_hash_keeps_the_intact_file(served, hub_env, monkeypatch):
    with pytest.raises(ChecksumMismatchError) as err:
        hub.fetch(location(sha256="0" * 64))
    assert err.value.source == "model index" and err.value.expected == "0" * 64
    assert "model index" in str(err.value) and "cc-registry pin" in str(err.value)
    assert len(blobs_and_snapshots(hub_env)) == 2  # the Hub's own file, intact: not evicted
    go_offline(monkeypatch)  # offline, a good file is never evicted either
    with pytest.raises(ChecksumMismatchError):
        hub.fetch(location(sha256="0" * 64))
    assert hub.fetch(location()).path.exists()


def test_truncated_transfer(fake_hub, payload, hub_env):
    # the Hub announces the full size; the CDN sends half of it
    fake_hub.add_file(REPO, FILE, payload, body=payload[: len(payload) // 2])
    start = time.monotonic()
    with pytest.raises(CorruptCheckpointError) as err:
        hub.fetch(location())
    assert time.monotonic() - start < 5
    assert "incomplete" in str(err.value)
    assert blobs_and_snapshots(hub_env) == []


def test_corrupt_cached_blob_is_redownloaded_online(served, payload):
    f = hub.fetch(location())
    blob = Path(os.path.realpath(f.path))
    blob.chmod(0o644)
    blob.write_bytes(b"\0" * len(payload))  # bit rot in the cache
    again = hub.fetch(location())
    assert again.path.read_bytes() == payload
    assert served.count("GET", "/cdn/") == 2


def test_corrupt_cached_blob_offline_is_evicted(served, payload, hub_env, monkeypatch):
    f = hub.fetch(location())
    blob = Path(os.path.realpath(f.path))
    blob.chmod(0o644)
    blob.write_bytes(b"\0" * len(payload))
    go_offline(monkeypatch)
    with pytest.raises(ChecksumMismatchError):
        hub.fetch(location())
    assert blobs_and_snapshots(hub_env) == []
    with pytest.raises(OfflineError):
        hub.fetch(location())


def test_evict_leaves_files_outside_the_cache_alone(tmp_path):
    f = tmp_path / "snapshots" / "abc" / "model.safetensors"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"x")
    hub.evict(f)
    assert f.exists()


def test_all_errors_are_weights_errors():
    for cls in (ChecksumMismatchError, CorruptCheckpointError, OfflineError, WeightsNotFoundError):
        assert issubclass(cls, WeightsError)


def test_the_fixtures_keep_tests_off_the_network(hub_env):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        with pytest.raises(ConnectionRefusedError, match="may not reach the network"):
            s.connect(("192.0.2.1", 443))  # TEST-NET-1, never routed


# ------------------------------------------------------------------------------------------------ network and disk faults


@pytest.mark.parametrize("role,status,headers", [("hub", 429, {"Retry-After": "0"}), ("hub", 500, {}),
                                                  ("hub", 502, {}), ("hub", 503, {}), ("cdn", 429, {"Retry-After": "0"})])
def test_a_transient_error_is_retried_as_huggingface_hub_does(served, payload, role, status, headers):
    served.inject(Fault(role, status=status, headers=headers))
    assert hub.fetch(location()).path.read_bytes() == payload


def test_a_retry_after_beyond_the_deadline_ends_at_once(served, monkeypatch):
    monkeypatch.setenv("CC_HUB_DOWNLOAD_DEADLINE", "5")
    served.inject(Fault("hub", status=429, headers={"Retry-After": "60"}, times=-1))
    start = time.monotonic()
    with pytest.raises(OfflineError, match="CC_HUB_DOWNLOAD_DEADLINE=5 s .the server asked to wait 61 s"):
        hub.fetch(location())
    assert time.monotonic() - start < 3


def test_a_trickling_body_ends_at_the_deadline(fake_hub, hub_env, monkeypatch):
    monkeypatch.setenv("CC_HUB_DOWNLOAD_DEADLINE", "1")
    fake_hub.add_file(REPO, FILE, save({"w": torch.zeros(16, 1024)}))  # 64 KiB at 2 KB/s: 32 s
    fake_hub.inject(Fault("cdn", rate=2000, times=-1))
    start = time.monotonic()
    with pytest.raises(OfflineError) as err:
        hub.fetch(location())
    assert time.monotonic() - start < 4
    assert "CC_HUB_DOWNLOAD_DEADLINE=1 s" in str(err.value) and fake_hub.cdn_endpoint in str(err.value)
    assert not list((hub_env / "hub").rglob("*.incomplete"))


def test_a_server_that_ignores_range_and_cuts_every_transfer_ends(fake_hub, monkeypatch):
    monkeypatch.setenv("CC_HUB_DOWNLOAD_BYTE_FACTOR", "1.5")
    data = save({"w": torch.zeros(16, 1024)})
    fake_hub.add_file(REPO, FILE, data)
    fake_hub.inject(Fault("cdn", cut_after=len(data) * 9 // 10, ignore_range=True, times=-1))
    with pytest.raises(OfflineError, match="CC_HUB_DOWNLOAD_BYTE_FACTOR=1.5"):
        hub.fetch(location())
    assert fake_hub.count("GET", "/cdn/") == 2


def test_a_read_timeout_names_hf_hub_download_timeout(served, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 0.3)
    monkeypatch.setenv("CC_HUB_DOWNLOAD_DEADLINE", "1")
    served.inject(Fault("cdn", stall=3, times=-1))
    with pytest.raises(OfflineError, match="HF_HUB_DOWNLOAD_TIMEOUT"):
        hub.fetch(location())


def test_a_redirect_loop_names_the_download_host(served):
    served.inject(Fault("cdn", status=302, headers={"Location": "/cdn/loop"}, times=-1))
    with pytest.raises(OfflineError, match="redirect loop at the download host") as err:
        hub.fetch(location())
    assert served.cdn_endpoint in str(err.value)


def test_a_404_from_the_download_host_is_not_blamed_on_the_hub(served):
    served.inject(Fault("cdn", status=404, times=-1))
    with pytest.raises(WeightsNotFoundError) as err:
        hub.fetch(location())
    assert "download host" in str(err.value) and served.cdn_endpoint in str(err.value)
    assert "token" not in str(err.value)


def test_a_full_disk_is_a_typed_error(served, hub_env):
    import resource
    import signal

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, hard))
    try:
        with pytest.raises(OfflineError, match="cannot write to the Hub cache") as err:
            hub.fetch(location())
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert "HF_HOME" in str(err.value)
    assert blobs_and_snapshots(hub_env) == []


def test_leftover_partial_downloads_are_removed_unless_locked(served, hub_env):
    from filelock import FileLock

    repo = hub_env / "hub" / "models--test-org--tiny.in1k"
    (repo / "blobs").mkdir(parents=True)
    stale = repo / "blobs" / f"{'a' * 64}.0123abcd.incomplete"
    live = repo / "blobs" / f"{'b' * 64}.4567cdef.incomplete"
    stale.write_bytes(b"half")
    live.write_bytes(b"half")
    locks = hub_env / "hub" / ".locks" / repo.name
    locks.mkdir(parents=True)
    with FileLock(locks / f"{'b' * 64}.lock"):  # another process is downloading that one
        hub.fetch(location())
    assert not stale.exists() and live.exists()


def test_a_transfer_cut_once_completes_within_the_default_byte_budget(fake_hub):
    data = save({"w": torch.arange(16 * 1024.0)})
    fake_hub.add_file(REPO, FILE, data)
    fake_hub.inject(Fault("cdn", cut_after=len(data) // 3))
    assert hub.fetch(location()).path.read_bytes() == data
    assert fake_hub.count("GET", "/cdn/") == 2
