"""Top-1 / top-5 accuracy on an ImageNet-style validation set, in one process or many.

Layouts accepted for ``--imagenet DIR`` (see :func:`find_imagenet`):

* **ImageFolder**: ``DIR/val/<class>/<image>`` or ``DIR/<class>/<image>``; class
  indices are the class folders in sorted order (for ImageNet-1k, the 1000 wnids
  sorted = the standard class indices), so *every* class folder must be there
  (empty ones are fine).
* **flat**: the images in ``DIR/val/`` or ``DIR/``, and a CSV with a header
  ``filename,label`` (``--labels CSV``, else ``labels.csv`` or ``val_labels.csv``
  in ``DIR/val/`` or ``DIR/``). ``filename`` is relative to the image folder;
  ``label`` is a class index (0-based) or a class name such as a wnid (names are
  indexed in sorted order, so every class must occur).

Images: .jpeg .jpg .png .bmp .webp .ppm .tif .tiff (any case), converted to RGB.

Distributed: under ``torchrun --nproc_per_node=N`` each rank takes every N-th
image (no padding, so nothing is counted twice), and the counts (images,
top-1 hits, top-5 hits, and the sum of the image indices as a check that each
image was evaluated exactly once) are summed onto rank 0::

    torchrun --nproc_per_node=4 -m bench run --all --checks accuracy --imagenet /data/imagenet

(the entry point is ``bench/__main__.py``: ``python -m bench`` is ``cc-bench``).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .distributed import SINGLE, Dist, reduce_sum_to_main

IMAGE_EXTENSIONS = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"})
LABEL_FILES = ("labels.csv", "val_labels.csv")
IMAGENET_VAL_IMAGES = 50_000


class DatasetError(Exception):
    """The ``--imagenet`` folder (or labels CSV) is missing or not in a layout we read."""


@dataclass(frozen=True)
class ImageSet:
    """An evaluation set: (path, class index) pairs, and how it was found."""

    root: Path
    layout: str  # "imagefolder" or "flat"
    samples: tuple[tuple[str, int], ...]
    classes: tuple[str, ...]  # class names in index order; () when the CSV gives indices
    labels_file: Path | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def describe(self) -> str:
        where = f"{self.root}" + (f" + {self.labels_file.name}" if self.labels_file else "")
        classes = f", {len(self.classes)} classes" if self.classes else ""
        return f"{self.layout} {where}: {len(self.samples)} images{classes}"

    def check_classes(self, num_classes: int) -> str | None:
        """Why these labels cannot be used with a ``num_classes`` classifier, or None."""
        if self.classes and len(self.classes) != num_classes:
            what = "class folders" if self.layout == "imagefolder" else "distinct label names"
            return (f"{self.root} has {len(self.classes)} {what} but the model has {num_classes} classes: class "
                    f"indices (names in sorted order) would not match; provide every class, or integer labels")
        top = max((label for _, label in self.samples), default=-1)
        if top >= num_classes:
            return f"label {top} is out of range for a model with {num_classes} classes"
        return None


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and not name.startswith(".")


def _image_folder(base: Path) -> ImageSet:
    classes = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    samples = []
    for index, name in enumerate(classes):
        for folder, dirs, files in os.walk(base / name, followlinks=True):
            dirs.sort()
            samples += [(os.path.join(folder, f), index) for f in sorted(files) if _is_image(f)]
    if not samples:
        raise DatasetError(f"{base}: {len(classes)} class folders but no images in them")
    return ImageSet(root=base, layout="imagefolder", samples=tuple(samples), classes=tuple(classes))


def _flat(base: Path, labels_file: Path) -> ImageSet:
    try:
        with open(labels_file, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = {(name or "").strip().lower(): name for name in reader.fieldnames or ()}
            if "filename" not in fields or "label" not in fields:
                raise DatasetError(f"{labels_file}:1: the header must name the columns 'filename' and 'label' "
                                   f"(found: {', '.join(reader.fieldnames or ()) or 'nothing'})")
            rows = [(line, (row[fields["filename"]] or "").strip(), (row[fields["label"]] or "").strip())
                    for line, row in enumerate(reader, start=2)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{labels_file}: cannot read the labels CSV ({exc})") from None
    if not rows:
        raise DatasetError(f"{labels_file}: no rows")
    for line, name, label in rows:
        if not name or not label:
            raise DatasetError(f"{labels_file}:{line}: empty filename or label")
    numeric = [label.lstrip("-").isdigit() for _, _, label in rows]
    if all(numeric):
        classes: tuple[str, ...] = ()
        labelled = [(line, name, int(label)) for line, name, label in rows]
        for line, _, label in labelled:
            if label < 0:
                raise DatasetError(f"{labels_file}:{line}: negative label {label}")
    elif not any(numeric):
        classes = tuple(sorted({label for _, _, label in rows}))
        position = {name: i for i, name in enumerate(classes)}
        labelled = [(line, name, position[label]) for line, name, label in rows]
    else:
        line = rows[numeric.index(not numeric[0])][0]
        raise DatasetError(f"{labels_file}:{line}: labels mix class indices and class names")
    missing = [(line, name) for line, name, _ in labelled if not (base / name).is_file()]
    if missing:
        shown = "; ".join(f"line {line}: {name}" for line, name in missing[:3])
        raise DatasetError(f"{labels_file}: {len(missing)} listed images are not in {base} ({shown}"
                           f"{'; ...' if len(missing) > 3 else ''})")
    samples = sorted((str(base / name), label) for _, name, label in labelled)
    return ImageSet(root=base, layout="flat", samples=tuple(samples), classes=classes, labels_file=labels_file)


def find_imagenet(root: str | os.PathLike[str], labels: str | os.PathLike[str] | None = None) -> ImageSet:
    """Read the validation set under ``root`` (layouts in the module docstring); raises ``DatasetError``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"--imagenet {root}: no such folder")
    base = root / "val" if (root / "val").is_dir() else root
    if labels is not None:
        labels_path = Path(labels).expanduser()
        if not labels_path.is_file():
            raise DatasetError(f"--labels {labels_path}: no such file")
        return _flat(base, labels_path)
    if any(d.is_dir() and not d.name.startswith(".") for d in base.iterdir()):
        return _image_folder(base)
    for folder in dict.fromkeys([base, root]):
        for name in LABEL_FILES:
            if (folder / name).is_file():
                return _flat(base, folder / name)
    raise DatasetError(f"--imagenet {root}: found neither class folders ({base}/<class>/<image>) nor a labels CSV "
                       f"({' or '.join(LABEL_FILES)} with columns filename,label); pass --labels CSV for a flat folder")


class LabeledImages(Dataset):
    """``(transform(image), label, index)`` for each sample."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as image:
            tensor = self.transform(image.convert("RGB"))
        return tensor, label, index


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, rank + 2*world, ...``: every index on exactly one rank, none repeated.

    (``DistributedSampler`` pads the last round with repeats so that all ranks
    get the same count; counted, those repeats would bias the accuracy.)
    """

    def __init__(self, length: int, rank: int = 0, world: int = 1):
        self.length, self.rank, self.world = length, rank, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world))


@dataclass(frozen=True)
class Counts:
    """Totals of one evaluation (over all ranks on rank 0)."""

    images: int
    top1: int
    top5: int
    index_sum: int = 0
    processes: int = 1


def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 32, workers: int = 0, device: str = "cpu",
             dist: Dist = SINGLE, advance: Callable[[float], None] | None = None) -> Counts:
    """Top-1/top-5 hit counts of ``model`` on ``dataset`` (items ``(image, label, index)``).

    Under torchrun, this rank evaluates its shard and the totals are summed onto
    rank 0, which checks that every image was counted exactly once.
    """
    n = len(dataset)
    sampler = ShardSampler(n, dist.rank, dist.world)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        pin_memory=device == "cuda", persistent_workers=False)
    model = model.eval().to(device)
    images = top1 = top5 = index_sum = 0
    failure: Exception | None = None
    try:
        with torch.inference_mode():
            for inputs, labels, indices in loader:
                inputs = inputs.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                logits = model(inputs)
                k = min(5, logits.shape[1])
                hits = logits.topk(k, dim=1).indices.eq(labels[:, None])
                top1 += int(hits[:, 0].sum())
                top5 += int(hits.any(dim=1).sum())
                images += len(labels)
                index_sum += int(indices.sum())
                if advance:
                    advance(len(labels))
    except Exception as exc:  # still take part in the reduction, so that the other ranks do not wait forever
        if not dist.active:
            raise
        failure = exc
    images, top1, top5, index_sum, failed = reduce_sum_to_main(
        [images, top1, top5, index_sum, int(failure is not None)], dist, device)
    if failure is not None:
        raise failure
    if failed:
        raise RuntimeError(f"{failed} of {dist.world} processes failed during the evaluation; see their output")
    if dist.is_main and (images != n or index_sum != n * (n - 1) // 2):
        raise RuntimeError(f"evaluated {images} images (index sum {index_sum}) but the set has {n} "
                           f"(index sum {n * (n - 1) // 2}): some were skipped or counted twice")
    return Counts(images=images, top1=top1, top5=top5, index_sum=index_sum, processes=dist.world)

