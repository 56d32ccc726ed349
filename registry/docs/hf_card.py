"""A Hugging Face model card (``README.md``) for one model of the index.

The front matter is the Hub's metadata (library, tags, datasets, license) with the
accuracy claims in its ``model-index`` form; ``huggingface_hub.ModelCard.load``
reads it back. A result is ``verified: true`` only when the bench verified that
figure (its latest measurement passed); the body shows claim, measurement and
status for every figure, as the docs pages do.
"""
from __future__ import annotations

from pathlib import Path

from ..entries import ModelEntry
from ..index import ModelIndex
from .figures import summarize
from .results import Results

LICENSE = "apache-2.0"  # timm's ported TF weights
DATASET = "imagenet-1k"
_METRICS = (("top1", "Top 1 Accuracy", "top1"), ("top5", "Top 5 Accuracy", "top5"))


def card_data(entry: ModelEntry, results: Results):
    """``huggingface_hub.ModelCardData`` for ``entry``; eval results from the index, verified by the bench."""
    from huggingface_hub import EvalResult, ModelCardData

    summary = summarize(entry, results)
    eval_results = []
    result = entry.result()
    for key, name, config in _METRICS:
        value = result.metric(name) if result else None
        if value is None:
            continue
        figure = summary.figure(key)
        eval_results.append(EvalResult(
            task_type="image-classification",
            task_name="Image Classification",
            dataset_type=DATASET,
            dataset_name="ImageNet-1k",
            dataset_split="validation",
            metric_type="accuracy",
            metric_name=name,
            metric_config=config,
            metric_value=float(value),
            verified=figure.verified,
        ))
    tags = ["image-classification", "timm", "cc-hub", "efficientnet", "condconv"]
    return ModelCardData(
        model_name=entry.id,
        library_name="timm",
        license=LICENSE,
        datasets=[DATASET],
        tags=tags,
        pipeline_tag="image-classification",
        eval_results=eval_results or None,
    )


def render_card(entry: ModelEntry, index: ModelIndex, results: Results) -> str:
    from .render import Site, template_env

    site = Site(index, results)
    data = card_data(entry, results)
    collection = next((c for c in index.collections if c.name == entry.collection), None)
    models = [entry]
    context = {
        **site.base_context(),
        "entry": entry,
        "collection": collection,
        "models": models,
        "example": entry,
        "summaries": [site.summaries[entry.id]],
        "summary": site.summaries[entry.id],
    }
    body = template_env().get_template("hf_card.md").render(context)
    return f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n"


def export_hf_card(entry: ModelEntry, index: ModelIndex, results: Results, out_dir: str | Path) -> Path:
    """Write ``out_dir/README.md`` (atomically); returns its path."""
    from ..safe_files import atomic_write

    path = Path(out_dir) / "README.md"
    atomic_write(path, render_card(entry, index, results).encode())
    return path
