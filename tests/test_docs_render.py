"""`cc-registry docs`: pages from the index and the results store; deterministic, checkable, round-tripping."""
from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from html.parser import HTMLParser
from pathlib import Path

import markdown
import pytest

import registry
from registry.cli import main
from registry.docs import GENERATED_MARKER, check_docs, read_results, render_docs, render_pages
from registry.docs.block import model_index_block
from registry.docs.markup import sanitize_prose

from docs_support import IDS, MACS, PARAMS, REPO, hostile_index, hostile_rows, row, write_results

PAGE = "collections/tf-efficientnet-condconv.md"
ANCHORS = REPO / "tests" / "fixtures" / "reference" / "anchors.md"


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    return write_results(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, results_dir) -> Path:
    out = tmp_path_factory.mktemp("docs")
    render_docs(None, results_dir, out)
    return out


@pytest.fixture(scope="module")
def unverified(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs_no_results")
    render_docs(None, tmp_path_factory.mktemp("empty_results"), out)
    return out


def summary_rows(page: str) -> dict[str, list[str]]:
    """The summary table's cells by model id."""
    rows = {}
    for line in page.splitlines():
        match = re.match(r"^\| <code>(tf_efficientnet_cc_\w+)</code> \| (.*) \|$", line)
        if match and "<br>" in line:
            rows[match[1]] = match[2].split(" | ")
    return rows


def test_the_pages_are_rendered(rendered):
    files = sorted(p.relative_to(rendered).as_posix() for p in rendered.rglob("*") if p.is_file())
    assert files == ["assets/plots/throughput-by-batch.png", "assets/plots/top1-vs-gmacs.png", PAGE,
                     "how-we-verify.md", "index.md", "results.md"]
    for name in files:
        if name.endswith(".md"):
            assert (rendered / name).read_text().startswith(GENERATED_MARKER + "\n")


def test_collection_page_shows_claim_measurement_and_status(rendered):
    page = (rendered / PAGE).read_text()
    rows = summary_rows(page)
    assert list(rows) == list(IDS)
    index = registry.load()
    for model_id, cells in rows.items():
        entry = index.get(model_id)
        params, macs, preprocessing, accuracy, file_size, weights = cells  # seven columns: fits 1280 px
        assert f"{entry.parameters:,}" in params and f"measured {PARAMS[model_id]:,}" in params
        assert "cc-verified" in params  # the newer run passes; the older failure is superseded
        assert f"{entry.flops:,}<br><small>measured {MACS[model_id]:,}</small>" in macs and "cc-verified" in macs
        assert f"{entry.image_size} px" in preprocessing and "not verified: not measured" in preprocessing
        assert f"crop {entry.crop_pct}" in preprocessing and entry.interpolation in preprocessing
        assert f"top-1 {entry.result().metric('Top 1 Accuracy')} %" in accuracy
        assert "not verified: ImageNet validation set not found (set CC_IMAGENET_VAL)" in accuracy
        assert f"top-5 {entry.result().metric('Top 5 Accuracy')} %" in accuracy
        assert f"{entry.file_size:,} B" in file_size
        assert entry.hub.repo_id in weights and entry.release.filename in weights
    assert "cc-verified" in rows[IDS[0]][4]
    assert "cc-mismatch" in rows[IDS[1]][4] and "measured 96,287,000" in rows[IDS[1]][4]
    assert "not verified: not measured" in rows[IDS[2]][4]


def test_flops_erratum_box(rendered):
    page = (rendered / PAGE).read_text()
    box = page.split('!!! warning "Erratum: published FLOPs"', 1)[1].split("\n\n## ", 1)[0]
    for model_id, published in zip(IDS, ("224,153,788", "224,158,524", "370,427,824")):
        assert re.search(rf"\| <code>{model_id}</code> \| {published} \| {MACS[model_id]:,} \| {MACS[model_id]:,} \|", box)
    assert "leaves out the CondConv convolutions" in box
    assert page.count('<a href="#errata">erratum</a>') == 3


def test_unverified_pages_say_why(unverified):
    page = (unverified / PAGE).read_text()
    rows = summary_rows(page)
    assert list(rows) == list(IDS)
    for cells in rows.values():
        assert all("not verified: no bench run recorded" in cell for cell in cells[:5])
    results = (unverified / "results.md").read_text()
    assert "No throughput measurement is recorded yet." in results
    assert not (unverified / "assets/plots/throughput-by-batch.png").exists()
    assert (unverified / "assets/plots/top1-vs-gmacs.png").stat().st_size > 10_000


def test_embedded_block_round_trips(rendered):
    page = rendered / PAGE
    text = page.read_text()
    block = text[text.rindex("<!--"):]
    assert block.startswith("<!--\nType: model-index\nCollections:\n  - Name: TF EfficientNet CondConv\n")
    assert "\nModels:\n  - Name: tf_efficientnet_cc_b0_4e\n    ID: tf_efficientnet_cc_b0_4e\n    In Collection:" in block
    assert "      Crop Pct: '0.875'\n" in block  # string forms as written in the index
    loaded, packaged = registry.load(page), registry.load()
    assert loaded.ids == packaged.ids
    ignore = {"source", "raw"}
    for ours, theirs in zip(loaded.models, packaged.models):
        for f in dataclasses.fields(ours):
            if f.name not in ignore:
                assert getattr(ours, f.name) == getattr(theirs, f.name), (ours.id, f.name)
    assert [(c.name, c.paper, c.citation) for c in loaded.collections] == \
           [(c.name, c.paper, c.citation) for c in packaged.collections]


def test_rendering_twice_is_byte_identical(tmp_path, results_dir):
    from registry.docs import plots

    first, second = tmp_path / "a", tmp_path / "b"
    plots._CACHE.clear()  # draw every plot twice, not once and then from memory
    render_docs(None, results_dir, first)
    plots._CACHE.clear()
    render_docs(None, results_dir, second)
    names = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    again = render_pages(registry.load(), read_results(results_dir))
    assert all((first / rel).read_bytes() == f.content for rel, f in again.items())


def test_check_catches_a_hand_edit_a_missing_and_a_stale_file(tmp_path, results_dir, capsys):
    out = tmp_path / "docs"
    args = ["docs", "--results", str(results_dir), "--out", str(out)]
    assert main(args) == 0
    assert main([*args, "--check"]) == 0
    capsys.readouterr()

    page = out / PAGE
    original = page.read_text()
    page.write_text(original.replace("410,171,168", "224,153,788", 1))
    assert main([*args, "--check"]) == 1
    out_text = capsys.readouterr()
    assert f"{page}: differs from a fresh rendering" in out_text.out and "docs are stale" in out_text.err
    page.write_text(original)

    (out / "assets/plots/top1-vs-gmacs.png").unlink()
    stale = out / "collections" / "old-collection.md"
    stale.write_text(GENERATED_MARKER + "\n\n# An old collection\n")
    handwritten = out / "notes.md"
    handwritten.write_text("# Not generated\n")
    report = check_docs(None, results_dir, out)
    assert sorted(report.problems) == sorted([f"{out / 'assets/plots/top1-vs-gmacs.png'}: missing",
                                              f"{stale}: stale (no longer rendered)"])
    assert main(args) == 0  # re-rendering repairs it and leaves hand-written pages alone
    assert check_docs(None, results_dir, out).ok and not stale.exists() and handwritten.exists()


def test_check_notices_new_results(tmp_path, results_dir):
    out = tmp_path / "docs"
    render_docs(None, results_dir, out)
    newer = write_results(tmp_path / "newer", [*read_rows(results_dir),
                          row("run-3", "2025-03-01T00:00:00Z", IDS[0], "accuracy", "top1", 77.3, "pass", claimed=77.324)])
    report = check_docs(None, newer, out)
    assert not report.ok and any(PAGE in p for p in report.problems)


def read_rows(results_dir: Path) -> list[dict]:
    import csv

    with (results_dir / "results.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_results_page(rendered):
    page = (rendered / "results.md").read_text()
    assert "![Top-1 accuracy against GMACs" in page and "](assets/plots/top1-vs-gmacs.png)" in page
    assert "](assets/plots/throughput-by-batch.png)" in page
    assert "| <code>tf_efficientnet_cc_b0_4e</code> | 32 | 11.8 |" in page  # 11.75 images/s
    compare = page.split("## Ours against timm", 1)[1]
    assert "| <code>tf_efficientnet_cc_b0_4e</code> | 1 | 22.5 | 25 | 0.9 |" in compare
    assert "| latency&#95;p99 |" in page or "| latency_p99 |" in page  # an unknown check is shown, not dropped
    assert "<code>run-2025-02-01</code>" in page and "<code>run-2025-01-01</code>" in page
    for baseline in ("EfficientNet-B0 (plain)", "EfficientNet-B1 (plain)"):
        assert baseline in page


def test_plot_baselines_agree_with_the_anchors():
    """The plain EfficientNet baselines drawn on the results plot, against the independent record."""
    from registry.docs.render import load_baselines

    text = ANCHORS.read_text()
    found = {b["name"]: b for b in load_baselines()}
    for name, top1, gmacs in re.findall(r"(tf_efficientnet_b[01]) (\d+\.\d+) / [\d.]+ \([\d.]+M params, ([\d.]+) GMACs\)", text):
        assert found[name]["top1"] == float(top1) and found[name]["gmacs"] == float(gmacs)
    assert {"tf_efficientnet_b0", "tf_efficientnet_b1"} <= set(found)


def test_how_we_verify_defines_macs_and_flops(rendered):
    page = (rendered / "how-we-verify.md").read_text()
    assert "## MACs and FLOPs" in page and "multiply-add" in page
    assert "<math" in page and "224,153,788" in page
    for check in ("params", "flops", "filesize", "accuracy", "throughput", "compare"):
        assert f"(`{check}`)" in page


def test_math_becomes_mathml_without_any_cdn(rendered):
    page = (rendered / PAGE).read_text()
    assert "$2^N$" not in page and "$\\alpha ^ N$" not in page
    assert '<math display="inline"><mrow><msup><mn>2</mn><mi>N</mi></msup></mrow></math>' in page
    assert "<mi>α</mi>" in page
    assert not re.search(r"(src|href)=\"https?://[^\"]*(katex|mathjax|cdn)", page, re.I)


def test_snippets_use_the_cc_models_api(rendered):
    """The usage and fine-tuning snippets call cc_models with arguments its functions accept."""
    cc_models = pytest.importorskip("cc_models")
    page = (rendered / PAGE).read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert len(blocks) == 2
    calls = 0
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    isinstance(node.func.value, ast.Name) and node.func.value.id == "cc_models":
                function = getattr(cc_models, node.func.attr)
                signature = inspect.signature(function)
                signature.bind(*[None] * len(node.args), **{k.arg: None for k in node.keywords})
                assert ast.literal_eval(node.args[0]) in IDS
                calls += 1
    assert calls >= 4


class _Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _html(markdown_text: str) -> _Elements:
    """The page through Python-Markdown with the site's extensions, as MkDocs converts it."""
    html = markdown.markdown(markdown_text, extensions=["toc", "tables", "admonition", "pymdownx.highlight",
                                                        "pymdownx.superfences"])
    parser = _Elements()
    parser.feed(html)
    return parser


def test_index_strings_cannot_inject_markup(tmp_path):
    root = hostile_index(tmp_path)
    index = registry.load(root)
    out = tmp_path / "docs"
    render_docs(index, write_results(tmp_path / "results", hostile_rows()), out)
    for page in sorted(out.rglob("*.md")):
        text = page.read_text()
        body = text[:text.rfind("<!--\nType: model-index")] if "Type: model-index" in text else text
        assert "<script" not in body and "<img" not in body, page
        for tag, attrs in _html(text).tags:
            assert tag not in ("script", "iframe", "object", "embed"), (page, tag)
            if tag == "img":  # only the renderer's own plots
                assert re.fullmatch(r"assets/plots/[a-z0-9-]+\.png", attrs.get("src", "")), (page, attrs)
            assert not any(name.startswith("on") for name in attrs), (page, tag, attrs)
            assert not re.match(r"\s*(javascript|data|vbscript):", attrs.get("href") or "", re.I), (page, attrs)
    page = (out / PAGE).read_text()
    assert "&lt;script&gt;window.__cc_xss = 'script'&lt;/script&gt;" in page  # shown as text
    assert "ends the comment --&gt;" in page
    # The block keeps the hostile strings as data, escaped so that they cannot close the comment...
    block = page[page.rindex("<!--\nType: model-index"):]
    assert block.count("-->") == 1 and block.endswith("-->\n")
    assert 'Reason: "ends the comment --\\x3E <script\\x3Ewindow' in block
    # ... and still round-trips.
    loaded = registry.load(out / PAGE)
    assert loaded.get(IDS[0]).errata[0].reason == index.get(IDS[0]).errata[0].reason
    assert loaded.collections[0].paper == index.collections[0].paper


def test_block_escapes_comment_terminators():
    index = registry.load()
    entry = index.get(IDS[0])
    raw = dict(entry.raw)
    raw["Code"] = "https://example.org/a--!>b"
    hostile = dataclasses.replace(entry, raw=raw)
    block = model_index_block(index.collections, [hostile])
    assert "--!>" not in block[4:-4] and "-->" not in block[4:-4]
    assert 'Code: "https://example.org/a--!\\x3Eb"' in block


def test_sanitize_prose_keeps_markdown_and_blocks_script_urls():
    text = sanitize_prose("**bold** [ok](https://example.org) [rel](../x.md) [bad](JavaScript:alert(1)) "
                          "![img](https://tracker.example/x.png) <b>x</b> {: onclick=y} $x^2$")
    assert "**bold** [ok](https://example.org) [rel](../x.md) [bad](#)" in text
    assert "&#33;[img]" in text and "&lt;b&gt;x&lt;/b&gt;" in text and "&#123;: onclick=y&#125;" in text
    assert "<msup><mi>x</mi><mn>2</mn></msup>" in text


def test_collection_page_templates_are_sandboxed(tmp_path):
    from registry.docs import DocsError

    root = tmp_path / "index"
    import shutil

    import model_index

    shutil.copytree(model_index.INDEX_DIR, root, ignore=shutil.ignore_patterns("__pycache__", "*.py", "templates"))
    page = root / "collections" / "tf-efficientnet-condconv.md"
    original = page.read_text()
    page.write_text(original.replace("{% include 'training.md' %}",
                                     "{{ cycler.__init__.__globals__.os.popen('echo pwned').read() }}"))
    with pytest.raises(DocsError, match="cannot render"):
        render_pages(registry.load(root), read_results(None))
    page.write_text(original.replace("{% include 'training.md' %}", "{{ 'x' * 1000000000 }}"))
    with pytest.raises(DocsError, match="repetition too large"):
        render_pages(registry.load(root), read_results(None))
    page.write_text(original.replace("{% include 'training.md' %}", "{% include '../../etc/passwd' %}"))
    with pytest.raises(DocsError, match="cannot include"):
        render_pages(registry.load(root), read_results(None))


def test_results_store_errors_exit_1(tmp_path, capsys):
    bad = tmp_path / "results"
    bad.mkdir()
    (bad / "results.csv").write_text("run_id,model_id\nx,y\n")
    code = main(["docs", "--results", str(bad), "--out", str(tmp_path / "docs")])
    assert code == 1 and "missing column(s)" in capsys.readouterr().err


def test_results_latest_row_per_figure(results_dir):
    results = read_results(results_dir)
    params = results.get(IDS[0], "params", "parameters")
    assert params.status == "pass" and params.run_id == "run-2025-02-01" and params.label == "verified"
    assert results.get(IDS[1], "filesize", "bytes").label == "mismatch"
    assert results.get(IDS[0], "accuracy", "top1").label.startswith("not verified: ImageNet validation set")
    assert results.get(IDS[0], "throughput", "images_per_s", 32).measured_value == 11.75
    assert [r.run_id for r in results.runs()] == ["run-2025-02-01", "run-2025-01-01"]
    assert "latency_p99" in results.checks and "compare" in results.checks


def test_committed_docs_are_up_to_date():
    """docs/ (committed) is what `cc-registry docs` renders from the index and results/ (CI catches stale pages)."""
    docs = REPO / "docs"
    if not docs.is_dir():
        pytest.skip("no docs/ in this checkout")
    report = check_docs(None, REPO / "results", docs)
    assert report.ok, "stale docs, run `cc-registry docs`:\n" + "\n".join(report.problems)


def test_render_after_changing_folder(tmp_path, monkeypatch, results_dir):
    """The packaged index may be loaded in one working folder and rendered from another (cc-bench does)."""
    index = registry.load()  # collection page path relative to this working folder
    monkeypatch.chdir(tmp_path)
    render_docs(index, results_dir, tmp_path / "docs")
    assert (tmp_path / "docs" / PAGE).is_file()


@pytest.mark.parametrize("value, decimals, shown", [
    (909.85, 0, "910"), (1000.4, 0, "1,000"), (13314116, 3, "13,314,116"), (77.3240, 3, "77.324"),
    (26.03, 1, "26"), (0.5, 3, "0.5"), (1.4705, 3, "1.47"),
])
def test_numbers_are_formatted_without_losing_digits(value, decimals, shown):
    from registry.docs.figures import fmt_number

    assert fmt_number(value, decimals) == shown
