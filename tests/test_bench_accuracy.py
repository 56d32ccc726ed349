"""The accuracy pipeline: dataset layouts, exactly-once sharding, parity with an independent timm-based loop,
and the same counts from 2 processes under torchrun."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import registry

from bench_support import copy_index, offline_env, override, release_name, run_records, set_field

from bench import cli
from bench.accuracy import DatasetError, ShardSampler, find_imagenet

MODEL_ID = "tf_efficientnet_cc_b0_4e"
NUM_CLASSES = 10
IMAGES = 30
# the rank (in the reference logits) of the label given to image i: top-1 hit, top-5-only hit, miss
CATEGORIES = ((0,), (1, 2, 3, 4), (5, 6, 7, 8, 9))


def _image(rng: np.random.Generator, size: tuple[int, int]):
    from PIL import Image

    w, h = size
    base = rng.integers(0, 256, size=(1, 1, 3))
    gradient = np.linspace(0, 1, w)[None, :, None] * rng.integers(-120, 120, size=(1, 1, 3))
    noise = rng.normal(0, 40, size=(h, w, 3))
    return Image.fromarray(np.clip(base + gradient + noise, 0, 255).astype(np.uint8))


# --------------------------------------------------------------------------------------------------------------
# layouts


def _touch_images(folder: Path, names, size=(40, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        _image(rng, size).save(folder / name)


def test_imagefolder_layout_under_val(tmp_path):
    for wnid in ("n02", "n01", "n03"):
        _touch_images(tmp_path / "val" / wnid, [f"{wnid}_a.JPEG", f"{wnid}_b.jpeg"])
    (tmp_path / "val" / "n01" / "notes.txt").write_text("not an image")
    found = find_imagenet(tmp_path)
    assert found.layout == "imagefolder" and found.classes == ("n01", "n02", "n03")
    assert [(Path(p).name, label) for p, label in found.samples] == [
        ("n01_a.JPEG", 0), ("n01_b.jpeg", 0), ("n02_a.JPEG", 1), ("n02_b.jpeg", 1), ("n03_a.JPEG", 2),
        ("n03_b.jpeg", 2)]
    assert found.check_classes(3) is None
    assert "3 class folders but the model has 1000 classes" in found.check_classes(1000)


def test_flat_layout_with_indices_or_wnids(tmp_path):
    _touch_images(tmp_path / "val", ["b.JPEG", "a.JPEG", "c.png"])
    (tmp_path / "val" / "labels.csv").write_text("filename,label\nb.JPEG,7\na.JPEG,3\nc.png,0\n")
    found = find_imagenet(tmp_path)
    assert found.layout == "flat" and found.classes == ()
    assert [(Path(p).name, label) for p, label in found.samples] == [("a.JPEG", 3), ("b.JPEG", 7), ("c.png", 0)]
    assert found.check_classes(5) == "label 7 is out of range for a model with 5 classes"

    wnids = tmp_path / "wnids.csv"
    wnids.write_text("Label,Filename\nn09,b.JPEG\nn01,a.JPEG\nn05,c.png\n")  # header order and case do not matter
    found = find_imagenet(tmp_path, labels=wnids)
    assert found.classes == ("n01", "n05", "n09")
    assert {Path(p).name: label for p, label in found.samples} == {"a.JPEG": 0, "b.JPEG": 2, "c.png": 1}


@pytest.mark.parametrize("csv_text, message", [
    ("file,class\na.JPEG,1\n", ":1: the header must name the columns 'filename' and 'label'"),
    ("filename,label\na.JPEG,1\nmissing.JPEG,2\n", "1 listed images are not in"),
    ("filename,label\na.JPEG,1\nb.JPEG,n01\n", "labels.csv:3: labels mix class indices and class names"),
    ("filename,label\na.JPEG,\n", "labels.csv:2: empty filename or label"),
])
def test_flat_layout_errors_are_located(tmp_path, csv_text, message):
    _touch_images(tmp_path, ["a.JPEG", "b.JPEG"])
    (tmp_path / "labels.csv").write_text(csv_text)
    with pytest.raises(DatasetError) as info:
        find_imagenet(tmp_path)
    assert message in str(info.value)


def test_unknown_layout(tmp_path):
    _touch_images(tmp_path, ["a.JPEG"])
    with pytest.raises(DatasetError, match="neither class folders"):
        find_imagenet(tmp_path)


@pytest.mark.parametrize("n", [0, 1, 7, 30, 31])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_cover_every_index_exactly_once(n, world):
    seen = [i for rank in range(world) for i in ShardSampler(n, rank, world)]
    assert sorted(seen) == list(range(n))
    assert sum(len(ShardSampler(n, rank, world)) for rank in range(world)) == n


# --------------------------------------------------------------------------------------------------------------
# the pipeline against an independent reference


def _pick_label(order: torch.Tensor, logits: torch.Tensor, ranks: tuple[int, ...]) -> int | None:
    """A class at one of ``ranks`` whose logit is clearly apart from its neighbours (no near-ties)."""
    values = logits[order]
    scale = float(values.abs().max()) or 1.0
    for r in ranks:
        gaps = [abs(float(values[r] - values[j])) for j in (r - 1, r + 1) if 0 <= j < len(values)]
        if min(gaps) > 1e-4 * scale:
            return int(order[r])
    return None


def _reference_logits(model, transform, paths: list[Path]) -> torch.Tensor:
    """A plain loop over the images with timm's eval transform, then one forward pass of timm's model."""
    from PIL import Image

    batch = []
    for path in paths:
        with Image.open(path) as im:
            batch.append(transform(im.convert("RGB")))
    with torch.no_grad():
        return model(torch.stack(batch))


def _reference_counts(logits: dict[str, torch.Tensor], root: Path) -> tuple[int, int, int]:
    """Top-1/top-5 hits of the reference logits against the labels the class folders give (sorted names)."""
    images = top1 = top5 = 0
    for label, folder in enumerate(sorted(d for d in root.iterdir() if d.is_dir())):
        for path in sorted(folder.iterdir()):
            top = logits[path.name].topk(5).indices.tolist()
            images += 1
            top1 += top[0] == label
            top5 += label in top
    return images, top1, top5


@pytest.fixture(scope="module")
def known_weights(tmp_path_factory):
    """A 10-class model with seeded weights saved as a release file, an index that points to it, and a generated
    ImageFolder whose labels put a third of the images at the reference's top-1, a third in its top-5 only, and a
    third outside it."""
    import timm
    import timm.data

    import cc_models

    tmp = tmp_path_factory.mktemp("known-weights")
    torch.manual_seed(1234)
    ours = cc_models.from_index(MODEL_ID, num_classes=NUM_CLASSES).eval()
    staged = tmp / "staged.pth"
    torch.save(ours.state_dict(), staged)
    ckpt_dir = tmp / "checkpoints"
    ckpt_dir.mkdir()
    name = release_name(MODEL_ID, staged)
    shutil.move(staged, ckpt_dir / name)

    root = copy_index(tmp)
    override(root, MODEL_ID, "Data Config", "Num Classes", NUM_CLASSES)
    set_field(root, MODEL_ID, "Weights", f"https://example.invalid/weights/{name}")
    entry = registry.load(root).get(MODEL_ID)
    assert entry.data.num_classes == NUM_CLASSES and entry.release.filename == name

    # the independent reference: timm's model (loaded with the same weights) and timm's eval transform
    reference = timm.create_model(MODEL_ID, num_classes=NUM_CLASSES).eval()
    reference.load_state_dict(torch.load(ckpt_dir / name, weights_only=True))
    transform = timm.data.create_transform(**entry.data.as_timm_dict())

    rng = np.random.default_rng(7)
    staging = tmp / "images"
    staging.mkdir()
    images = []
    for i in range(IMAGES):
        size = (int(rng.integers(180, 340)), int(rng.integers(180, 340)))
        path = staging / f"img_{i:02d}.JPEG"
        _image(rng, size).save(path, quality=90)
        images.append(path)
    logits = _reference_logits(reference, transform, images)
    data = tmp / "imagenet"
    for c in range(NUM_CLASSES):
        (data / "val" / f"c{c:02d}").mkdir(parents=True)
    expected = [0, 0]
    labels = {}
    for i, path in enumerate(images):
        order = logits[i].argsort(descending=True)
        category = i % 3
        label = _pick_label(order, logits[i], CATEGORIES[category])
        assert label is not None, "no clear-cut class for the generated image"
        labels[path.name] = label
        expected[0] += category == 0
        expected[1] += category in (0, 1)
        shutil.copy(path, data / "val" / f"c{label:02d}" / path.name)
    ref_images, ref_top1, ref_top5 = _reference_counts({p.name: logits[i] for i, p in enumerate(images)},
                                                       data / "val")
    assert (ref_images, ref_top1, ref_top5) == (IMAGES, *expected)
    return {"tmp": tmp, "index": root, "checkpoints": ckpt_dir, "data": data, "labels": labels,
            "expected": {"images": IMAGES, "top1": expected[0], "top5": expected[1]}}


def _accuracy_rows(report: dict) -> dict[str, dict]:
    return {r["metric"]: r for r in report["results"] if r["check"] == "accuracy"}


def _assert_counts(rows: dict[str, dict], expected: dict, processes: int) -> None:
    assert rows["top1"]["extra"]["images"] == rows["top5"]["extra"]["images"] == expected["images"]
    assert rows["top1"]["extra"]["correct"] == expected["top1"]
    assert rows["top5"]["extra"]["correct"] == expected["top5"]
    assert rows["top1"]["measured"] == pytest.approx(100 * expected["top1"] / expected["images"], abs=1e-3)
    assert rows["top1"]["extra"]["processes"] == processes


@pytest.mark.slow
def test_pipeline_matches_the_timm_reference_loop(known_weights, tmp_path, capsys, monkeypatch):
    kw = known_weights
    monkeypatch.chdir(tmp_path)
    code = cli.main(["run", MODEL_ID, "--checks", "accuracy", "--index", str(kw["index"]), "--imagenet",
                     str(kw["data"]), "--checkpoint-dir", str(kw["checkpoints"]), "--workers", "0",
                     "--eval-batch-size", "8", "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    rows = _accuracy_rows(report)
    _assert_counts(rows, kw["expected"], processes=1)
    # the claims (77.3 / 93.3) are far from a 10-class toy: failed claims, exit 1, with the subset noted
    assert code == 1 and rows["top1"]["status"] == "fail"
    assert "evaluated on 30 images, not the 50,000" in rows["top1"]["reason"]
    assert rows["top1"]["extra"]["weights"].endswith(kw["checkpoints"].joinpath(
        registry.load(kw["index"]).get(MODEL_ID).release.filename).name)


def test_flat_layout_reads_the_same_samples(known_weights, tmp_path):
    kw = known_weights
    flat = tmp_path / "flat"
    flat.mkdir()
    lines = ["filename,label"]
    for folder in sorted((kw["data"] / "val").iterdir()):
        for path in sorted(folder.iterdir()):
            shutil.copy(path, flat / path.name)
            lines.append(f"{path.name},{int(folder.name[1:])}")
    (flat / "val_labels.csv").write_text("\n".join(lines) + "\n")
    as_folder = {Path(p).name: label for p, label in find_imagenet(kw["data"]).samples}
    as_flat = {Path(p).name: label for p, label in find_imagenet(flat).samples}
    assert as_flat == as_folder and len(as_flat) == IMAGES


@pytest.mark.slow
def test_two_processes_under_torchrun_give_identical_counts(known_weights, tmp_path):
    kw = known_weights
    results = tmp_path / "results"
    env = offline_env(tmp_path, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "bench", "run", MODEL_ID, "--checks", "accuracy", "--index", str(kw["index"]), "--imagenet", str(kw["data"]),
           "--checkpoint-dir", str(kw["checkpoints"]), "--workers", "0", "--eval-batch-size", "4",
           "--results", str(results), "--format", "json", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert "{" in proc.stdout, proc.stdout + proc.stderr[-4000:]
    assert proc.returncode != 0, "the 10-class toy fails the index's claims, so torchrun reports rank 0's exit 1"
    report = json.loads(proc.stdout[proc.stdout.index("{"):])  # only rank 0 prints
    _assert_counts(_accuracy_rows(report), kw["expected"], processes=2)
    (record,) = run_records(results)  # only rank 0 stores
    assert record["environment"]["processes"] == 2


def test_accuracy_skipped_without_weights(known_weights, tmp_path, capsys, monkeypatch):
    kw = known_weights
    monkeypatch.chdir(tmp_path)
    for key, value in offline_env(tmp_path).items():
        if key.startswith(("HF_", "TORCH_")):
            monkeypatch.setenv(key, value)
    code = cli.main(["run", MODEL_ID, "--checks", "accuracy", "--index", str(kw["index"]), "--imagenet",
                     str(kw["data"]), "--format", "json"])
    rows = _accuracy_rows(json.loads(capsys.readouterr().out))
    assert code == 0
    for row in rows.values():
        assert row["status"] == "skip" and row["reason"].startswith("no weights:"), row


def test_class_count_mismatch_is_an_error(known_weights, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["run", MODEL_ID, "--checks", "accuracy", "--imagenet", str(known_weights["data"]),
                     "--format", "json"])  # the packaged index: 1000 classes
    rows = _accuracy_rows(json.loads(capsys.readouterr().out))
    assert code == 1
    assert all(r["status"] == "error" and "10 class folders but the model has 1000" in r["reason"]
               for r in rows.values())
