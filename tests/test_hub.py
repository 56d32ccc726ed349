"""cc_models.hub against a Hub on 127.0.0.1: download, cache, offline, integrity, typed errors."""
from __future__ import annotations

import os
import time
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
    WeightsError,
    WeightsNotFoundError,
)

try:
    from hub_server import FakeHub, fake_hub, hub_env, sha256  # noqa: F401  (fixtures)
except ImportError:  # tests/ imported as a package
    from tests.hub_server import FakeHub, fake_hub, hub_env, sha256  # noqa: F401

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


# ------------------------------------------------------------------------------------------------ settings


def test_settings_are_read_at_call_time(hub_env, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1234/")
    s = hub.hub_settings()
    assert s.endpoint == "http://127.0.0.1:1234"
    assert s.cache_dir == str(hub_env / "hub")
    assert s.offline is False
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "other"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    s = hub.hub_settings()
    assert s.cache_dir == str(tmp_path / "other" / "hub")
    assert s.offline is True


# ------------------------------------------------------------------------------------------------ the happy path


def test_download_fetches_through_the_hub_protocol_and_verifies(served, payload, hub_env):
    f = hub.fetch(location())
    assert f.path.read_bytes() == payload
    assert f.from_cache is False
    assert f.server_sha256 == sha256(payload)
    assert f.verified_sha256 == sha256(payload)
    assert "X-Linked-Etag" in f.verified_against
    assert f.commit_hash == served.refs[REPO]["main"]
    # the standard cache layout: refs/main -> commit, snapshot symlink -> blob named by the LFS sha256
    repo_dir = hub_env / "hub" / "models--test-org--tiny.in1k"
    assert (repo_dir / "refs" / "main").read_text() == f.commit_hash
    assert f.path.is_symlink() and Path(os.path.realpath(f.path)) == repo_dir / "blobs" / sha256(payload)
    # HEAD on the Hub (probe + huggingface_hub), then one GET on the CDN origin
    assert served.count("HEAD", f"/{REPO}/resolve/main/{FILE}") >= 1
    assert served.count("GET", "/cdn/") == 1


def test_second_call_offline_loads_from_the_cache_without_network(served, payload, monkeypatch):
    hub.fetch(location())
    served.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    f = hub.fetch(location())
    assert f.from_cache is True
    assert f.path.read_bytes() == payload
    assert f.verified_sha256 == sha256(payload)  # checked against the blob's digest name


def test_second_online_call_uses_the_cache(served):
    hub.fetch(location())
    f = hub.fetch(location())
    assert f.from_cache is True
    assert served.count("GET", "/cdn/") == 1


def test_index_sha256_is_checked_when_present(served, payload):
    f = hub.fetch(location(sha256=sha256(payload)))
    assert f.verified_against == "model index"


def test_pinned_commit_revision(served, payload, monkeypatch):
    commit = served.refs[REPO]["main"]
    f = hub.fetch(location(), revision=commit)
    assert f.commit_hash == commit and f.path.read_bytes() == payload
    served.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
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
    assert f.server_sha256 is None and f.verified_against is None  # git oid, not a sha256: parse check only


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
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as err:
        hub.fetch(location(filename="nope.safetensors"))
    assert "HF_HUB_OFFLINE" in str(err.value)


def test_missing_revision(served):
    with pytest.raises(WeightsNotFoundError) as err:
        hub.fetch(location(), revision="v9.9")
    assert err.value.kind == "revision" and "'v9.9'" in str(err.value)


# ------------------------------------------------------------------------------------------------ offline


def test_offline_and_not_cached(served, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError) as err:
        hub.fetch(location())
    msg = str(err.value)
    assert "HF_HUB_OFFLINE" in msg and "checkpoint_path=" in msg
    assert served.count() == 0  # offline means no request at all


def test_stopped_server_not_cached_fails_fast(served):
    served.stop()
    start = time.monotonic()
    with pytest.raises(OfflineError) as err:
        hub.fetch(location())
    assert time.monotonic() - start < 5
    assert "HF_ENDPOINT" in str(err.value) and served.endpoint in str(err.value)


def test_stopped_server_falls_back_to_cache(served, payload):
    hub.fetch(location())
    served.stop()
    f = hub.fetch(location())
    assert f.from_cache and f.path.read_bytes() == payload


def test_server_errors_count_as_unreachable(hub_env, monkeypatch):
    # an endpoint that is not a Hub at all (no X-Repo-Commit) -> huggingface_hub's FileMetadataError
    with FakeHub() as other:
        other.add_static(f"/{REPO}/resolve/main/{FILE}", b"not a hub")
        monkeypatch.setenv("HF_ENDPOINT", other.endpoint)
        with pytest.raises(OfflineError) as err:
            hub.fetch(location())
    assert "Hugging Face Hub" in str(err.value)


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
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError):
        hub.fetch(location())


def test_wrong_index_hash(served, hub_env):
    with pytest.raises(ChecksumMismatchError) as err:
        hub.fetch(location(sha256="0" * 64))
    assert err.value.source == "model index" and err.value.expected == "0" * 64
    assert "model index" in str(err.value)
    assert blobs_and_snapshots(hub_env) == []


def test_truncated_transfer(fake_hub, payload, hub_env):
    # the Hub announces the full size; the CDN sends half of it
    fake_hub.add_file(REPO, FILE, payload, body=payload[: len(payload) // 2])
    start = time.monotonic()
    with pytest.raises(CorruptCheckpointError) as err:
        hub.fetch(location())
    assert time.monotonic() - start < 5
    assert "incomplete" in str(err.value)
    assert blobs_and_snapshots(hub_env) == []


def test_truncated_file_in_repo_fails_the_safetensors_check(fake_hub, payload, hub_env, monkeypatch):
    short = payload[:-7]  # the repo itself holds a cut file; its digest and size are consistent
    fake_hub.add_file(REPO, FILE, short)
    with pytest.raises(CorruptCheckpointError) as err:
        hub.fetch(location())
    assert "truncated" in str(err.value)
    assert blobs_and_snapshots(hub_env) == []
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError):
        hub.fetch(location())


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
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ChecksumMismatchError):
        hub.fetch(location())
    assert blobs_and_snapshots(hub_env) == []
    with pytest.raises(OfflineError):
        hub.fetch(location())


def test_evict_leaves_files_outside_the_cache_alone(tmp_path):
    f = tmp_path / "snapshots" / "abc" / "model.safetensors"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"x")
    assert hub.evict(f) == []
    assert f.exists()


def test_all_errors_are_weights_errors():
    for cls in (ChecksumMismatchError, CorruptCheckpointError, OfflineError, WeightsNotFoundError):
        assert issubclass(cls, WeightsError)


def test_the_fixtures_keep_tests_off_the_network(hub_env):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        with pytest.raises(ConnectionRefusedError, match="may not reach the network"):
            s.connect(("192.0.2.1", 443))  # TEST-NET-1, never routed
