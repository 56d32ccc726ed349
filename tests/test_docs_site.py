"""The docs site: `mkdocs build --strict` on the generated pages, then headless Chromium on 127.0.0.1.

The browser test needs Debian's chromium (`make browser` installs it) and the `playwright` Python
package, driven with `executable_path=/usr/bin/chromium`: no browser download, no request off the host.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import registry
from registry.docs import render_docs

from docs_support import EXTERNAL_RE, IDS, XSS_MARK, build_site, hostile_index, hostile_rows, write_results

PAGE_HTML = "collections/tf-efficientnet-condconv.html"
CHROMIUM = os.environ.get("CC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def _build(tmp: Path, index, rows) -> Path:
    docs, site = tmp / "docs", tmp / "site"
    render_docs(index, write_results(tmp / "results", rows), docs)
    result = build_site(tmp, docs, site)
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not warnings, warnings
    return site


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("site"), None, None)


@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("hostile_site")
    return _build(tmp, registry.load(hostile_index(tmp)), hostile_rows())


def test_mkdocs_build_strict(site):
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    assert {"index.html", PAGE_HTML, "results.html", "how-we-verify.html"} <= set(pages)
    html = (site / PAGE_HTML).read_text()
    assert all(model_id in html for model_id in IDS)
    assert "<math" in html and "$2^N$" not in html
    assert (site / "assets/plots/top1-vs-gmacs.png").is_file()
    assert (site / "search/search_index.js").is_file()  # the offline plugin's inlined index


def test_built_site_requests_nothing_from_other_hosts(site):
    for page in sorted(site.rglob("*.html")):
        text = page.read_text()
        assert not EXTERNAL_RE.search(text), (page, EXTERNAL_RE.search(text).group(0))
        assert "fonts.googleapis" not in text and "unpkg.com" not in text, page
    shim = site / "assets/javascripts/iframe-worker-shim.js"  # vendored in place of the offline plugin's CDN copy
    assert "http" not in shim.read_text().split("*/", 1)[1]


# ---------------------------------------------------------------------------
# Browser
# ---------------------------------------------------------------------------

class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture()
def serve():
    servers = []

    def start(root: Path) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def browser(tmp_path):
    if not CHROMIUM:
        pytest.skip("Debian's chromium is not installed (`make browser` or `apt-get install chromium`)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # an empty user-data-dir
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS, viewport={"width": 1400, "height": 900},
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()


class Recorder:
    """Every request, console message, page error and dialog of a browser context."""

    def __init__(self, context, page):
        self.requests: list[str] = []
        self.console: list[str] = []
        self.errors: list[str] = []
        context.on("request", lambda request: self.requests.append(request.url))
        page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("dialog", lambda dialog: (self.errors.append(f"dialog: {dialog.message}"), dialog.dismiss()))

    def off_host(self, base: str) -> list[str]:
        host = urlsplit(base).netloc
        return [u for u in self.requests if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).netloc != host]


def _visit(page, url: str) -> None:
    page.goto(url, wait_until="load")
    page.wait_for_load_state("networkidle")


def _search(page, query: str) -> None:
    search = page.locator("input.md-search__input")
    search.click()
    page.wait_for_function("() => !/Initializing/i.test("
                           "document.querySelector('.md-search-result__meta')?.textContent || 'Initializing')",
                           timeout=30_000)
    search.press_sequentially(query)
    page.locator(".md-search-result__item").first.wait_for(timeout=30_000)


@pytest.mark.browser
def test_site_in_chromium(site, serve, browser, tmp_path):
    base = serve(site)
    page = browser.new_page()
    seen = Recorder(browser, page)

    _visit(page, base + PAGE_HTML)
    table = page.evaluate("""() => {
        const tables = [...document.querySelectorAll('article table')];
        const t = tables.find(t => [...t.querySelectorAll('th')].some(th => th.textContent.trim() === 'MACs'));
        return t ? {headers: [...t.querySelectorAll('th')].map(th => th.textContent.trim()),
                    ids: [...t.querySelectorAll('tbody tr td:first-child')].map(td => td.textContent.trim())} : null;
    }""")
    assert table is not None, "no summary table"
    assert table["ids"] == list(IDS)
    assert table["headers"][:3] == ["ID", "Parameters", "MACs"] and "Weights" in table["headers"]
    erratum = page.locator("article .admonition.warning").filter(has_text="Erratum").first
    assert erratum.is_visible()
    erratum_text = erratum.inner_text()
    assert "224,153,788" in erratum_text and "410,171,168" in erratum_text and "FLOPs" in erratum_text
    math = page.evaluate("[...document.querySelectorAll('article math')].map(m => m.getBoundingClientRect().width)")
    assert len(math) >= 5 and all(width > 0 for width in math), math
    shot = tmp_path / "collection-page.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")

    _visit(page, base + "results.html")
    images = page.evaluate("""() => [...document.querySelectorAll('article img')].map(
        img => ({src: img.getAttribute('src'), width: img.naturalWidth, height: img.naturalHeight}))""")
    assert {Path(i["src"]).name for i in images} == {"top1-vs-gmacs.png", "throughput-by-batch.png"}
    assert all(i["width"] > 0 and i["height"] > 0 for i in images), images
    results_shot = tmp_path / "results-page.png"
    page.screenshot(path=str(results_shot), full_page=True)
    print(f"screenshot: {results_shot}")

    _visit(page, base + "index.html")  # search: its index and worker come from the site itself
    _search(page, "erratum")

    assert not seen.off_host(base), seen.off_host(base)
    assert not seen.errors, seen.errors
    assert not [m for m in seen.console if m.startswith("error")], seen.console


@pytest.mark.browser
def test_hostile_index_strings_render_as_text(hostile_site, serve, browser, tmp_path):
    base = serve(hostile_site)
    page = browser.new_page()
    seen = Recorder(browser, page)
    for name in ("index.html", PAGE_HTML, "results.html"):
        _visit(page, base + name)
        assert page.evaluate(f"typeof window.{XSS_MARK}") == "undefined", name
        assert page.locator("article script").count() == 0
        assert page.evaluate("[...document.querySelectorAll('article *')].filter("
                             "e => [...e.attributes].some(a => a.name.startsWith('on'))).length") == 0
    _visit(page, base + PAGE_HTML)
    text = page.locator("article").inner_text()
    assert f"<script>window.{XSS_MARK} = 'script'</script>" in text  # shown, not run
    assert f"<img src=x onerror=\"window.{XSS_MARK} = 'img'\">" in text
    for link in page.locator("article a").all():
        href = link.get_attribute("href") or ""
        assert not re.match(r"\s*(javascript|data|vbscript):", href, re.I), href
    page.get_by_text("a link", exact=True).click()  # a neutralised javascript: link goes nowhere
    page.screenshot(path=str(tmp_path / "hostile-page.png"), full_page=True)
    print(f"screenshot: {tmp_path / 'hostile-page.png'}")
    assert page.evaluate(f"typeof window.{XSS_MARK}") == "undefined"
    _search(page, "Hostile")  # search results are built from the indexed text: still text
    assert page.evaluate(f"typeof window.{XSS_MARK}") == "undefined"
    assert not any(urlsplit(u).path.endswith("/x") for u in seen.requests), "an injected <img src=x> loaded"
    assert not seen.off_host(base) and not seen.errors, (seen.off_host(base), seen.errors)


_INLINE_FORMULAS_JS = """() => [...document.querySelectorAll('article math')].map(m => {
    const r = m.getBoundingClientRect();
    const host = m.parentElement.classList.contains('formula') ? m.parentElement : m;
    const block = host.closest('p, li, td, th');
    const texts = [host.previousSibling, host.nextSibling].filter(n => n && n.nodeType === 3 && n.textContent.trim());
    const sameLine = texts.some(n => {
        const range = document.createRange();
        range.selectNodeContents(n);
        return [...range.getClientRects()].some(t => t.top < r.bottom && t.bottom > r.top);
    });
    return {text: m.textContent, inParagraph: !!block, sameLine};
})"""


@pytest.mark.browser
def test_formulas_stay_inline_and_the_summary_fits_1280px(site, serve, browser, tmp_path):
    base = serve(site)
    page = browser.new_page()
    page.set_viewport_size({"width": 1280, "height": 900})
    for name in ("how-we-verify.html", PAGE_HTML):
        _visit(page, base + name)
        formulas = page.evaluate(_INLINE_FORMULAS_JS)
        assert formulas, name
        # Each formula sits in a paragraph and shares its line box with the text next to it.
        broken = [f for f in formulas if not (f["inParagraph"] and f["sameLine"])]
        assert not broken, (name, broken)
        starts = page.evaluate("[...document.querySelectorAll('article p')].map(p => p.textContent.trim()[0] || '')")
        assert not [s for s in starts if s in ".,;:)"], name  # no paragraph that starts mid-sentence

    _visit(page, base + PAGE_HTML)
    fit = page.evaluate("""() => {
        const t = [...document.querySelectorAll('article table')].find(
            t => [...t.querySelectorAll('th')].some(th => th.textContent.trim() === 'MACs'));
        const wrap = t.closest('.md-typeset__scrollwrap') || t.parentElement;
        return {scroll: wrap.scrollWidth, client: wrap.clientWidth, page: document.documentElement.scrollWidth};
    }""")
    assert fit["scroll"] <= fit["client"] and fit["page"] <= 1280, fit
    page.locator("article h2", has_text="Summary").scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "summary-1280.png"))
    print(f"screenshot: {tmp_path / 'summary-1280.png'}")
