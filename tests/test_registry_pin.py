"""`cc-registry pin` against a Hub on 127.0.0.1: the index records commit and SHA-256; loads verify them."""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import shutil

import pytest

import registry
from registry.cli import main

from hub_server import fake_hub, hub_env, sha256  # noqa: F401  (fixtures)


@pytest.fixture
def index_copy(tmp_path):
    src = registry.load().root.parent
    dst = tmp_path / "index"
    shutil.copytree(src / "models", dst / "models")
    shutil.copytree(src / "collections", dst / "collections")
    shutil.copy(src / "model-index.yml", dst / "model-index.yml")
    return dst


def served_index(fake_hub, index_copy, *, lfs=True) -> dict[str, bytes]:
    """Each model's Hub file on the fake Hub (any bytes: pinning reads metadata, not tensors)."""
    files = {}
    for entry in registry.load(index_copy / "model-index.yml").models:
        files[entry.id] = f"weights of {entry.id}".encode()
        fake_hub.add_file(entry.hub.repo_id, entry.hub.filename, files[entry.id], lfs=lfs)
    return files


def test_pin_records_commit_and_sha256_with_a_minimal_text_edit(fake_hub, index_copy, capsys):
    files = served_index(fake_hub, index_copy)
    yml = index_copy / "models" / "tf_efficientnet_cc_b0_4e.yml"
    before = yml.read_text()
    assert main(["pin", "--index", str(index_copy / "model-index.yml")]) == 0
    after = yml.read_text()
    changed = [line for line in difflib.ndiff(before.splitlines(), after.splitlines()) if line[:1] in "+-"]
    entry = registry.load(index_copy / "model-index.yml").get("tf_efficientnet_cc_b0_4e")
    commit = fake_hub.refs[entry.hub.repo_id]["main"]
    assert changed == ["-       Revision: main", f"+       Revision: {commit}  # pinned from main",
                       f"+       SHA256: {sha256(files[entry.id])}"]
    assert entry.hub.revision == commit and entry.hub.sha256 == sha256(files[entry.id])
    assert after.startswith("# tf_efficientnet_cc_b0_4e: one variant")  # comments kept
    assert "3" not in capsys.readouterr().err
    # pinning again changes nothing
    assert main(["pin", "--index", str(index_copy / "model-index.yml")]) == 0
    assert yml.read_text() == after


def test_pin_a_file_not_in_lfs_checks_its_git_oid(fake_hub, index_copy, capsys):
    files = served_index(fake_hub, index_copy, lfs=False)
    root = str(index_copy / "model-index.yml")
    assert main(["pin", "tf_efficientnet_cc_b1_8e", "--index", root, "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["models"]
    assert row["sha256"] == hashlib.sha256(files["tf_efficientnet_cc_b1_8e"]).hexdigest()
    assert registry.load(root).get("tf_efficientnet_cc_b1_8e").hub.sha256 == row["sha256"]
    assert registry.load(root).get("tf_efficientnet_cc_b0_4e").hub.sha256 is None  # only the one asked for


def test_pin_failure_writes_nothing(fake_hub, index_copy, capsys):
    served_index(fake_hub, index_copy)
    del fake_hub.refs["timm/tf_efficientnet_cc_b0_8e.in1k"]  # one repo gone
    texts = {p: p.read_text() for p in index_copy.rglob("*.yml")}
    assert main(["pin", "--index", str(index_copy / "model-index.yml")]) == 1
    err = capsys.readouterr().err
    assert "tf_efficientnet_cc_b0_8e: cannot pin: RepositoryNotFoundError" in err and "nothing was written" in err
    assert {p: p.read_text() for p in index_copy.rglob("*.yml")} == texts
    assert main(["pin", "nope", "--index", str(index_copy / "model-index.yml")]) == 2


def test_a_pinned_load_verifies_against_the_pin(fake_hub, index_copy):
    from cc_models import hub
    from cc_models.errors import ChecksumMismatchError

    files = served_index(fake_hub, index_copy)
    root = index_copy / "model-index.yml"
    assert main(["pin", "tf_efficientnet_cc_b0_4e", "--index", str(root)]) == 0
    entry = registry.load(root).get("tf_efficientnet_cc_b0_4e")
    assert hub.fetch(entry.hub).verified_against == "model index"
    # the server now serves and advertises another file under the same name: believed no longer
    other = dataclasses.replace(entry.hub, revision="main")
    fake_hub.push(entry.hub.repo_id)
    fake_hub.add_file(entry.hub.repo_id, entry.hub.filename, files[entry.id] + b"!")
    with pytest.raises(ChecksumMismatchError, match="model index"):
        hub.fetch(other)


def test_pin_that_cannot_write_restores_every_file(fake_hub, index_copy, monkeypatch, capsys):
    import errno

    from registry import pin

    served_index(fake_hub, index_copy)
    texts = {p: p.read_text() for p in index_copy.rglob("*.yml")}
    real, calls = pin.atomic_write, []

    def full_disk_on_the_second_file(path, text):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, text)

    monkeypatch.setattr(pin, "atomic_write", full_disk_on_the_second_file)
    assert main(["pin", "--index", str(index_copy / "model-index.yml")]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert {p: p.read_text() for p in index_copy.rglob("*.yml")} == texts
