"""cc_models.weights / cc_models.checkpoint: loading verified state dicts into models, release files."""
from __future__ import annotations

import dataclasses
import io
import os
import pickle
import time
import zipfile

import pytest
import torch
from safetensors.torch import save, save_file
from torch import nn

import registry
from registry import HubLocation, ReleaseFile

from cc_models import weights
from cc_models.errors import (
    ChecksumMismatchError,
    CorruptCheckpointError,
    OfflineError,
    StateDictMismatchError,
    UnsafeCheckpointError,
    WeightsError,
    WeightsNotFoundError,
)

from hub_server import FakeHub, fake_hub, go_offline, hub_env, sha256  # noqa: F401  (fixtures)

pytestmark = pytest.mark.filterwarnings("ignore::cc_models.errors.UnpinnedWeightsWarning")

REPO = "test-org/tinynet.in1k"
MODEL_ID = "tf_efficientnet_cc_b0_4e"


class TinyNet(nn.Module):
    """Stem, BatchNorm (with num_batches_tracked) and a timm-style `classifier` head."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv_stem = nn.Conv2d(3, 8, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.classifier = nn.Linear(8, num_classes) if num_classes else nn.Identity()

    def forward(self, x):
        return self.classifier(self.bn1(self.conv_stem(x)).mean((2, 3)))


def trained(num_classes: int = 10, seed: int = 1) -> dict[str, torch.Tensor]:
    """A state dict unlike any fresh initialisation (random values, non-trivial BN stats)."""
    torch.manual_seed(seed)
    model = TinyNet(num_classes)
    sd = model.state_dict()
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v + 7) for k, v in sd.items()}


def assert_loaded(model: nn.Module, sd: dict[str, torch.Tensor], skip: tuple[str, ...] = ()) -> None:
    for k, v in model.state_dict().items():
        if not k.startswith(skip):
            assert torch.equal(v, sd[k]), k


@pytest.fixture(scope="module")
def base_entry():
    return registry.load().get(MODEL_ID)


def entry_for(base, *, filename="model.safetensors", sha=None, release=None, repo=REPO):
    return dataclasses.replace(base, hub=HubLocation(repo, filename, "main", sha), release=release or base.release)


# ------------------------------------------------------------------------------------------------ from the Hub


def test_pretrained_from_hub_loads_the_served_tensors_exactly(fake_hub, base_entry, monkeypatch):
    sd = trained()
    fake_hub.add_file(REPO, "model.safetensors", save(sd))
    model = TinyNet()
    weights.load_pretrained(model, entry_for(base_entry))
    assert_loaded(model, sd)
    # second call offline, server gone: from the cache
    fake_hub.stop()
    go_offline(monkeypatch)
    again = TinyNet()
    weights.load_pretrained(again, entry_for(base_entry))
    assert_loaded(again, sd)


def test_index_sha256_mismatch_raises_before_loading(fake_hub, base_entry):
    fake_hub.add_file(REPO, "model.safetensors", save(trained()))
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ChecksumMismatchError):
        weights.load_pretrained(model, entry_for(base_entry, sha="f" * 64))
    assert_loaded(model, before)


def test_hub_404_and_offline_errors(fake_hub, base_entry, monkeypatch):
    with pytest.raises(WeightsNotFoundError):
        weights.load_pretrained(TinyNet(), entry_for(base_entry, repo="test-org/missing"))
    go_offline(monkeypatch)
    with pytest.raises(OfflineError):
        weights.load_pretrained(TinyNet(), entry_for(base_entry))


def test_entry_without_hub(base_entry):
    with pytest.raises(WeightsNotFoundError) as err:
        weights.load_pretrained(TinyNet(), dataclasses.replace(base_entry, hub=None))
    assert err.value.kind == "entry" and "checkpoint_path=" in str(err.value)


def test_prefers_safetensors_over_a_named_bin(fake_hub, base_entry):
    sd = trained()
    other = trained(seed=2)
    fake_hub.add_file(REPO, "model.safetensors", save(sd))
    buf = io.BytesIO()
    torch.save(other, buf)
    fake_hub.add_file(REPO, "pytorch_model.bin", buf.getvalue())
    model = TinyNet()
    weights.load_pretrained(model, entry_for(base_entry, filename="pytorch_model.bin"))
    assert_loaded(model, sd)
    assert fake_hub.count("HEAD", "pytorch_model.bin") == 0


def test_falls_back_to_bin_through_weights_only_load(fake_hub, base_entry):
    sd = trained()
    buf = io.BytesIO()
    torch.save({"state_dict": sd, "epoch": 3}, buf)
    fake_hub.add_file(REPO, "pytorch_model.bin", buf.getvalue())
    model = TinyNet()
    weights.load_pretrained(model, entry_for(base_entry, filename="pytorch_model.bin"))
    assert_loaded(model, sd)


def test_a_hub_file_announced_far_larger_than_the_model_is_not_downloaded(fake_hub, base_entry, hub_env):
    fake_hub.add_file(REPO, "model.safetensors", save(trained()), size=10**12)  # a disk-filling answer
    with pytest.raises(CorruptCheckpointError, match="announces 1,000,000,000,000 bytes"):
        weights.load_pretrained(TinyNet(), entry_for(base_entry))
    assert fake_hub.count("GET", "/cdn/") == 0


@pytest.mark.parametrize("filename", ["pytorch_model.bin", "model.safetensors"])
def test_corrupt_file_from_the_hub_is_evicted(fake_hub, base_entry, hub_env, filename):
    # the repo itself holds a broken file; its digest and size are consistent, so only parsing finds it
    bad = b"PK\x03\x04 definitely not a zip archive" if filename.endswith(".bin") else save(trained())[:-7]
    fake_hub.add_file(REPO, filename, bad)
    with pytest.raises(CorruptCheckpointError):
        weights.load_pretrained(TinyNet(), entry_for(base_entry, filename=filename))
    leftovers = [p for p in (hub_env / "hub").rglob("*") if p.is_file() and ("blobs" in p.parts or
                                                                                "snapshots" in p.parts)]
    assert leftovers == []


# ------------------------------------------------------------------------------------------------ local files


def test_checkpoint_path_safetensors_pth_and_directory(tmp_path, base_entry):
    sd = trained()
    st = tmp_path / "model.safetensors"
    save_file(sd, st)
    pth = tmp_path / "weights.pth"
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}}, pth)
    for path in (st, pth, tmp_path):
        model = TinyNet()
        weights.load_pretrained(model, base_entry, checkpoint_path=path)
        assert_loaded(model, sd)


def test_release_named_checkpoint_path_checks_its_prefix(tmp_path, base_entry):
    sd = trained()
    raw = tmp_path / "raw.pth"
    torch.save(sd, raw)
    digest = sha256(raw.read_bytes())
    good = tmp_path / f"tinynet-{digest[:8]}.pth"
    raw.rename(good)
    model = TinyNet()
    weights.load_pretrained(model, base_entry, checkpoint_path=good)
    assert_loaded(model, sd)
    bad = tmp_path / "tinynet-00000000.pth"
    good.rename(bad)
    with pytest.raises(ChecksumMismatchError) as err:
        weights.load_pretrained(TinyNet(), base_entry, checkpoint_path=bad)
    assert err.value.expected == "00000000"
    assert bad.exists()  # never deletes a user's file


def test_pickle_with_objects_is_refused(tmp_path, base_entry):
    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"conv_stem.weight": Payload()}, f, protocol=2)
    with pytest.raises(UnsafeCheckpointError) as err:
        weights.load_pretrained(TinyNet(), base_entry, checkpoint_path=path)
    assert "weights_only" in str(err.value)
    assert isinstance(err.value, CorruptCheckpointError)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_truncated_local_file(tmp_path, base_entry, suffix):
    full = tmp_path / f"full{suffix}"
    (save_file(trained(), full) if suffix == ".safetensors" else torch.save(trained(), full))
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[:-100])
    with pytest.raises(CorruptCheckpointError) as err:
        weights.load_pretrained(TinyNet(), base_entry, checkpoint_path=cut)
    assert "truncated" in str(err.value) or "unreadable" in str(err.value)


def test_missing_checkpoint_path(tmp_path, base_entry):
    with pytest.raises(WeightsNotFoundError):
        weights.load_pretrained(TinyNet(), base_entry, checkpoint_path=tmp_path / "nope.pth")
    with pytest.raises(WeightsNotFoundError):
        weights.load_pretrained(TinyNet(), base_entry, checkpoint_path=tmp_path)  # empty directory


# ------------------------------------------------------------------------------------------------ key / shape checks


def test_shape_mismatch_names_the_keys_and_both_shapes(tmp_path, base_entry):
    sd = trained()
    sd["conv_stem.weight"] = torch.zeros(8, 3, 5, 5)
    path = tmp_path / "m.safetensors"
    save_file(sd, path)
    with pytest.raises(StateDictMismatchError) as err:
        weights.load_pretrained(TinyNet(), base_entry, checkpoint_path=path)
    msg = str(err.value)
    assert "conv_stem.weight" in msg and "(8, 3, 5, 5)" in msg and "(8, 3, 3, 3)" in msg
    assert err.value.shape_mismatches == [("conv_stem.weight", (8, 3, 5, 5), (8, 3, 3, 3))]


def test_missing_and_unexpected_keys(tmp_path, base_entry):
    sd = trained()
    del sd["bn1.running_var"]
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "m.safetensors"
    save_file(sd, path)
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(StateDictMismatchError) as err:
        weights.load_pretrained(model, base_entry, checkpoint_path=path)
    assert err.value.missing == ["bn1.running_var"] and err.value.unexpected == ["extra.weight"]
    assert "bn1.running_var" in str(err.value) and "extra.weight" in str(err.value)
    assert_loaded(model, before)  # nothing half-loaded


def test_mismatch_message_limits_the_list(tmp_path, base_entry):
    path = tmp_path / "m.safetensors"
    save_file({**trained(), **{f"extra{i}": torch.zeros(1) for i in range(12)}}, path)
    with pytest.raises(StateDictMismatchError, match=r"extra0, extra1, extra10, extra11, extra2, ... \(7 more\)"):
        weights.load_pretrained(TinyNet(), base_entry, checkpoint_path=path)


def test_missing_num_batches_tracked_is_tolerated(tmp_path, base_entry):
    sd = trained()
    del sd["bn1.num_batches_tracked"]
    path = tmp_path / "m.safetensors"
    save_file(sd, path)
    model = TinyNet()
    weights.load_pretrained(model, base_entry, checkpoint_path=path)
    assert_loaded(model, sd, skip=("bn1.num_batches_tracked",))


@pytest.mark.parametrize("num_classes", [3, 0])
def test_num_classes_change_reinitialises_only_the_classifier(tmp_path, base_entry, num_classes):
    sd = trained(num_classes=10)
    path = tmp_path / "m.safetensors"
    save_file(sd, path)
    torch.manual_seed(123)
    model = TinyNet(num_classes)
    fresh = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("classifier")}
    weights.load_pretrained(model, base_entry, checkpoint_path=path)
    assert_loaded(model, sd, skip=("classifier",))
    for k, v in fresh.items():
        assert torch.equal(model.state_dict()[k], v)


def test_classifier_with_other_input_width_is_a_real_mismatch(tmp_path, base_entry):
    sd = trained()
    sd["classifier.weight"] = torch.zeros(10, 16)
    path = tmp_path / "m.safetensors"
    save_file(sd, path)
    with pytest.raises(StateDictMismatchError, match="classifier.weight"):
        weights.load_pretrained(TinyNet(), base_entry, checkpoint_path=path)


# ------------------------------------------------------------------------------------------------ hostile checkpoints


def _pth(obj, path):
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("case", ["meta", "sparse", "int8", "complex", "all_nan", "one_inf"])
def test_tensors_that_are_not_weights_raise_documented_errors(tmp_path, base_entry, case):
    sd = trained()
    w = sd["conv_stem.weight"]
    sd["conv_stem.weight"] = {
        "meta": torch.empty(w.shape, device="meta"), "sparse": w.to_sparse(), "int8": w.to(torch.int8),
        "complex": w.to(torch.complex64), "all_nan": torch.full(w.shape, float("nan")),
        "one_inf": w.index_put_((torch.tensor(0),), torch.tensor(float("inf"))),
    }[case]
    paths = [_pth(sd, tmp_path / "m.pth")]
    if case in ("int8", "complex", "all_nan", "one_inf"):
        paths.append(tmp_path / "m.safetensors")
        save_file(sd, paths[-1])
    for path in paths:
        model = TinyNet()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises((CorruptCheckpointError, StateDictMismatchError)) as err:
            weights.load_pretrained(model, base_entry, checkpoint_path=path)
        assert "conv_stem.weight" in str(err.value), (path, str(err.value))
        assert_loaded(model, before)  # nothing loaded


def test_safetensors_shapes_are_compared_before_any_tensor_is_read(tmp_path, base_entry, monkeypatch):
    import safetensors

    sd = trained()
    sd["bn1.weight"] = torch.zeros(9)
    path = tmp_path / "m.safetensors"
    save_file(sd, path)
    real = safetensors.safe_open

    class NoReads:
        def __init__(self, *args, **kwargs):
            self.inner = real(*args, **kwargs)

        def __enter__(self):
            self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def __getattr__(self, name):
            if name == "get_tensor":
                raise AssertionError("a tensor was read before the shapes were checked")
            return getattr(self.inner, name)

    monkeypatch.setattr(safetensors, "safe_open", NoReads)
    with pytest.raises(StateDictMismatchError, match=r"bn1.weight checkpoint \(9,\) vs model \(8,\)"):
        weights.load_pretrained(TinyNet(), base_entry, checkpoint_path=path)


def test_a_deflate_bomb_pth_is_refused_before_unpacking(tmp_path, base_entry):
    plain = _pth(trained(), tmp_path / "plain.pth")
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info.filename))
        out.writestr("plain/data/99", bytes(16 << 20))  # 16 MiB of zeros in about 16 KB
    assert bomb.stat().st_size < 100_000
    with pytest.raises(CorruptCheckpointError, match="CC_CHECKPOINT_MAX_RATIO"):
        weights.load_pretrained(TinyNet(), base_entry, checkpoint_path=bomb)


def test_a_file_far_larger_than_the_model_is_refused_before_reading(tmp_path, base_entry):
    path = tmp_path / "m.safetensors"
    save_file({**trained(), "padding": torch.zeros(5 << 20)}, path)  # 20 MiB for a model of a few KB
    with pytest.raises(CorruptCheckpointError, match="outside"):
        weights.load_pretrained(TinyNet(), base_entry, checkpoint_path=path)


def test_a_compressed_pth_within_the_bounds_loads(tmp_path, base_entry):
    plain = _pth(trained(), tmp_path / "plain.pth")
    packed = tmp_path / "packed.pth"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info.filename))
    model = TinyNet()
    weights.load_pretrained(model, base_entry, checkpoint_path=packed)
    assert_loaded(model, trained())


def test_checkpoint_path_directory_never_reads_outside_it(tmp_path, base_entry):
    outside = tmp_path / "model.safetensors"
    save_file(trained(), outside)
    folder = tmp_path / "ckpts"
    folder.mkdir()
    entry = entry_for(base_entry, filename="../model.safetensors")
    with pytest.raises(WeightsNotFoundError):
        weights.load_pretrained(TinyNet(), entry, checkpoint_path=folder)


# ------------------------------------------------------------------------------------------------ release files


@pytest.fixture
def release_file():
    buf = io.BytesIO()
    torch.save(trained(), buf)
    data = buf.getvalue()
    return f"tinynet-{sha256(data)[:8]}.pth", data


def release_entry(base, url, name):
    return dataclasses.replace(base, release=ReleaseFile.from_url(f"{url.rsplit('/', 1)[0]}/{name}"))


def test_fetch_release_file(fake_hub, base_entry, release_file, tmp_path):
    name, data = release_file
    url = fake_hub.add_static(f"/releases/v0.1/{name}", data)
    entry = release_entry(base_entry, url, name)
    assert weights.find_release_file(entry, tmp_path) is None
    path = weights.fetch_release_file(entry, tmp_path / "dl")
    assert path == tmp_path / "dl" / name and path.read_bytes() == data
    assert sorted(os.listdir(tmp_path / "dl")) == [name]  # no temp file left
    assert weights.find_release_file(entry, tmp_path / "dl") == path
    # present and valid: no second download
    before = fake_hub.count("GET", "/releases/")
    assert weights.fetch_release_file(entry, tmp_path / "dl") == path
    assert fake_hub.count("GET", "/releases/") == before
    # and it loads as a checkpoint
    model = TinyNet()
    weights.load_pretrained(model, entry, checkpoint_path=path)
    assert_loaded(model, trained())


def test_fetch_release_file_with_url_override(fake_hub, base_entry, release_file, tmp_path):
    name, data = release_file
    url = fake_hub.add_static(f"/mirror/{name}", data)
    entry = dataclasses.replace(base_entry, release=ReleaseFile("https://example.invalid/" + name, name, name[-12:-4]))
    assert weights.fetch_release_file(entry, tmp_path, url=url).read_bytes() == data


def test_fetch_release_file_prefix_mismatch_keeps_nothing(fake_hub, base_entry, release_file, tmp_path):
    _name, data = release_file
    wrong = "tinynet-00000000.pth"
    url = fake_hub.add_static(f"/releases/{wrong}", data)
    with pytest.raises(ChecksumMismatchError):
        weights.fetch_release_file(release_entry(base_entry, url, wrong), tmp_path)
    assert os.listdir(tmp_path) == []


def test_fetch_release_file_truncated(fake_hub, base_entry, release_file, tmp_path):
    name, data = release_file
    url = fake_hub.add_static(f"/releases/{name}", data[:-50], content_length=len(data))
    # urllib ends a short body quietly; torch.hub's SHA-256 prefix check catches it
    with pytest.raises((CorruptCheckpointError, ChecksumMismatchError)):
        weights.fetch_release_file(release_entry(base_entry, url, name), tmp_path)
    assert os.listdir(tmp_path) == []


def test_fetch_release_file_404_offline_and_unreachable(fake_hub, base_entry, release_file, tmp_path, monkeypatch):
    name, _data = release_file
    entry = release_entry(base_entry, f"{fake_hub.endpoint}/releases/{name}", name)
    with pytest.raises(WeightsNotFoundError):
        weights.fetch_release_file(entry, tmp_path)
    fake_hub.stop()
    start = time.monotonic()
    with pytest.raises(OfflineError) as err:
        weights.fetch_release_file(entry, tmp_path, timeout=2)
    assert time.monotonic() - start < 5 and "cannot reach" in str(err.value)
    go_offline(monkeypatch)
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE"):
        weights.fetch_release_file(entry, tmp_path)
    assert os.listdir(tmp_path) == []


def test_find_release_file_rejects_a_corrupt_copy(base_entry, release_file, tmp_path):
    name, data = release_file
    entry = release_entry(base_entry, "https://example.invalid/x", name)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / name).write_bytes(data[:-1])
    with pytest.raises(ChecksumMismatchError, match="delete"):
        weights.find_release_file(entry, tmp_path)
    assert weights.find_release_file(entry, tmp_path, verify=False) == tmp_path / "checkpoints" / name


def test_no_release_in_entry(base_entry, tmp_path):
    with pytest.raises(WeightsNotFoundError):
        weights.fetch_release_file(dataclasses.replace(base_entry, release=None), tmp_path)


def test_errors_say_what_to_do_next():
    err = OfflineError("no network", "unset HF_HUB_OFFLINE")
    assert str(err) == "no network\n  -> unset HF_HUB_OFFLINE"
    assert isinstance(err, WeightsError)


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def timm_checkpoint() -> tuple[dict[str, torch.Tensor], bytes]:
    """timm's tf_efficientnet_cc_b0_4e state dict (the real Hub layout), every tensor made distinctive."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    sd = timm.create_model(MODEL_ID).state_dict()
    g = torch.Generator().manual_seed(0)
    sd = {k: (v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v + 3) for k, v in sd.items()}
    return sd, save(sd)


def test_from_index_pretrained_through_the_packaged_index(fake_hub, timm_checkpoint, base_entry, monkeypatch):
    from_index = pytest.importorskip("cc_models.factory").from_index
    sd, data = timm_checkpoint
    hub = base_entry.hub  # timm/tf_efficientnet_cc_b0_4e.in1k, model.safetensors, main
    fake_hub.add_file(hub.repo_id, hub.filename, data)

    model = from_index(MODEL_ID, pretrained=True)
    assert_loaded(model, sd)
    assert fake_hub.count("GET", "/cdn/") == 1

    headless = from_index(MODEL_ID, pretrained=True, num_classes=10)
    assert headless.classifier.weight.shape == (10, 1280)
    assert_loaded(headless, sd, skip=("classifier",))
    assert fake_hub.count("GET", "/cdn/") == 1  # from the cache

    fake_hub.stop()
    go_offline(monkeypatch)
    assert_loaded(from_index(MODEL_ID, pretrained=True), sd)


def test_from_index_checkpoint_path_and_typed_errors(hub_env, timm_checkpoint, tmp_path, monkeypatch):
    from_index = pytest.importorskip("cc_models.factory").from_index
    sd, data = timm_checkpoint
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    assert_loaded(from_index(MODEL_ID, checkpoint_path=path), sd)
    with pytest.raises(StateDictMismatchError, match="blocks.4.0.conv_pw.weight"):  # 4 experts vs 8
        from_index("tf_efficientnet_cc_b0_8e", checkpoint_path=path)
    go_offline(monkeypatch)
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE"):
        from_index(MODEL_ID, pretrained=True)
