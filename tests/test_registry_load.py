"""The packaged index loads into typed entries that agree with the public record."""
from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest

import model_index
import registry
from registry.docs.block import plain_data

from constants import MODEL_IDS, PARAMS

ANCHORS = Path(__file__).resolve().parent / "fixtures" / "reference" / "anchors.md"
VARIANTS = MODEL_IDS


@pytest.fixture(scope="module")
def index():
    return registry.load()


def test_packaged_index_has_the_three_variants(index):
    assert index.ids == VARIANTS
    assert [c.name for c in index.collections] == ["TF EfficientNet CondConv"]
    assert all(m.collection == "TF EfficientNet CondConv" for m in index)


def test_entries_are_frozen(index):
    entry = index.get("tf_efficientnet_cc_b0_4e")
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.flops = 1
    with pytest.raises(TypeError):
        entry.raw["Name"] = "x"


def test_string_forms_become_numbers(index):
    entry = index.get("tf_efficientnet_cc_b1_8e")
    assert entry.crop_pct == 0.882 and isinstance(entry.crop_pct, float)
    assert entry.image_size == 240 and entry.data.input_size == (3, 240, 240)
    assert entry.result().metric("Top 1 Accuracy") == pytest.approx(79.318)
    assert entry.arch.bn_momentum == pytest.approx(0.01)  # TF decay 0.99


def test_data_config_matches_timm(index):
    timm_data = pytest.importorskip("timm.data")
    timm = pytest.importorskip("timm")
    for entry in index:
        expected = timm_data.resolve_data_config({}, model=timm.create_model(entry.id, pretrained=False))
        assert entry.data.as_timm_dict() == {**expected, "mean": tuple(expected["mean"]), "std": tuple(expected["std"])}


def _line_of(path: Path, needle: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def _anchor_table(title: str) -> dict[str, list[str]]:
    text = ANCHORS.read_text()
    section = text.split(title, 1)[1]
    rows = {}
    for line in section.splitlines()[1:]:
        if line.startswith("## "):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells and cells[0].startswith("tf_efficientnet_cc"):
            rows[cells[0]] = cells[1:]
    return rows


def test_claims_agree_with_published_anchors(index):
    """The index's claims against an independent record (anchors.md), not against our own output."""
    arch = _anchor_table("## Architecture facts")
    compute = _anchor_table("## Compute")
    files = _anchor_table("## Checkpoints")
    acc = _anchor_table("## Accuracy")
    num = lambda s: int(s.replace(",", ""))
    for entry in index:
        params = num(arch[entry.id][0])
        assert entry.parameters == round(params, -4), "Parameters is the exact count rounded to 10k"
        assert entry.image_size == int(arch[entry.id][1])
        assert entry.crop_pct == float(arch[entry.id][2])
        assert entry.arch.max_experts == int(arch[entry.id][4])
        assert entry.arch.depth_multiplier == float(arch[entry.id][5])
        assert entry.flops == num(compute[entry.id][1]), "FLOPs is fvcore's multiply-add count"
        assert entry.erratum("Metadata.FLOPs").published == num(compute[entry.id][0])
        assert entry.hub.repo_id == files[entry.id][0]
        assert entry.release.filename == files[entry.id][1]
        assert entry.file_size == num(files[entry.id][2])
        top1, top5 = (float(x) for x in acc[entry.id][0].split("/"))
        assert entry.result().metrics == {"Top 1 Accuracy": top1, "Top 5 Accuracy": top5}


def test_release_file_prefix(index):
    for entry in index:
        assert re.fullmatch(r"[0-9a-f]{8}", entry.release.sha256_prefix)
        assert entry.release.url == entry.weights and entry.release.url.startswith("https://")


def test_unknown_id_names_close_matches(index):
    with pytest.raises(registry.UnknownModelError) as info:
        index.get("tf_efficientnet_cc_b1_4e")
    assert "tf_efficientnet_cc_b1_8e" in str(info.value)
    assert isinstance(info.value, KeyError)


def test_source_locations_point_into_the_yaml(index):
    entry = index.get("tf_efficientnet_cc_b0_8e")
    assert entry.source.file.endswith("models/tf_efficientnet_cc_b0_8e.yml")
    line = Path(model_index.INDEX_DIR / "models" / "tf_efficientnet_cc_b0_8e.yml").read_text().splitlines()[entry.source.line - 1]
    assert "Name: tf_efficientnet_cc_b0_8e" in line


def test_modelindex_library_loads_our_root():
    modelindex = pytest.importorskip("modelindex")
    mi = modelindex.load(str(model_index.root()))
    mi.check(silent=True)
    assert not mi.check_errors
    by_name = {m.name: m for m in mi.models}
    assert set(by_name) == set(VARIANTS)
    ours = registry.load()
    for entry in ours:
        model = by_name[entry.id]
        assert model.metadata.flops == entry.flops
        assert int(model.metadata.data["File Size"]) == entry.file_size
        assert model.in_collection == entry.collection
        assert model.weights == entry.weights
        assert model.full_model.paper["URL"] == ours.collection(entry.collection).paper.url
        # Collection-level inheritance: our resolved Metadata and Data Config are model-index's full model's.
        assert dict(model.full_model.metadata.data) == plain_data(entry.raw["Metadata"])
        assert model.full_model.data["Data Config"] == plain_data(entry.raw["Data Config"])
    assert [c.name for c in mi.collections] == ["TF EfficientNet CondConv"]


def test_a_variant_is_its_collections_base_architecture_with_its_own_values(tmp_path):
    """A list a model adds to its collection's Metadata is appended, as model-index does; own values win."""
    modelindex = pytest.importorskip("modelindex")
    root = tmp_path / "index"
    shutil.copytree(model_index.INDEX_DIR, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    b1 = root / "models" / "tf_efficientnet_cc_b1_8e.yml"
    text = b1.read_text()
    text = text.replace("      Image Size: '240'\n", "      Image Size: '240'\n      Training Data: [JFT-300M]\n      LR: 0.1\n")
    b1.write_text(text.replace("      Depth Multiplier: 1.1\n", "      Depth Multiplier: 1.1\n      Activation: relu\n"))
    ours = registry.load(root)
    full = {m.name: m.full_model for m in modelindex.load(str(root / "model-index.yml")).models}
    entry = ours.get("tf_efficientnet_cc_b1_8e")
    assert entry.training.training_data == tuple(full[entry.id].metadata.data["Training Data"]) == ("ImageNet", "JFT-300M")
    assert entry.training.lr == full[entry.id].metadata.data["LR"] == 0.1
    assert (entry.arch.activation, entry.arch.depth_multiplier, len(entry.arch.stages)) == ("relu", 1.1, 7)
    others = [ours.get(i) for i in VARIANTS[:2]]
    assert {m.arch.activation for m in others} == {"swish"} and {m.training.training_data for m in others} == {("ImageNet",)}
    assert all(m.arch.stages == entry.arch.stages for m in others)
    # Each value of the merged list is located where it is written.
    item = next(m for m in registry.check(root)[0].models if m.data["Name"] == entry.id)
    page = root / "collections" / "tf-efficientnet-condconv.md"
    for i, (file, needle) in enumerate([(page, "        - ImageNet"), (b1, "Training Data: [JFT-300M]")]):
        problem = item.problem(("Metadata", "Training Data", i), "x")
        assert (problem.file, problem.line) == (str(file), _line_of(file, needle))


def test_entries_pickle_and_deepcopy(index):
    """Entries travel with models (torch.save, copy.deepcopy): both must keep them intact."""
    import copy
    import pickle

    entry = index.get("tf_efficientnet_cc_b1_8e")
    for clone in (pickle.loads(pickle.dumps(entry)), copy.deepcopy(entry)):
        assert clone == entry and dict(clone.raw) == dict(entry.raw)
        assert clone.result().metrics == entry.result().metrics


NEW_VARIANT = """\
Models:
  - Name: my_cc_b0_8e
    In Collection: TF EfficientNet CondConv
    Metadata:
      FLOPs: 420870304
      Parameters: 24010000
      Image Size: '224'
      Crop Pct: '0.875'
    Architecture Config:
      Depth Multiplier: 1.0
      Experts Multiplier: 2
"""


def test_a_new_variant_is_a_short_file(tmp_path):
    """Twelve lines under the collection define a whole model: timm's tf_efficientnet_cc_b0_8e, parameter for parameter."""
    cc_models = pytest.importorskip("cc_models")
    root = tmp_path / "index"
    shutil.copytree(model_index.INDEX_DIR, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (root / "models" / "my_cc_b0_8e.yml").write_text(NEW_VARIANT)
    (root / "model-index.yml").write_text((root / "model-index.yml").read_text() + "  - models/my_cc_b0_8e.yml\n")
    model = cc_models.from_index("my_cc_b0_8e", index=root)
    assert sum(p.numel() for p in model.parameters()) == PARAMS["tf_efficientnet_cc_b0_8e"]
