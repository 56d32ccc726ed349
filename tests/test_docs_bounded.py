"""A collection page is untrusted Jinja: rendering it is bounded in time and memory (issue 13.6), and a page
that asks for too much fails with its file and line, exit 1, and no page written."""
from __future__ import annotations

import shutil
import time

import pytest

import model_index
from registry.cli import main
from registry.docs import bounded

PAGE = "collections/tf-efficientnet-condconv.md"
HOOK = "{% include 'training.md' %}"


@pytest.fixture
def index_copy(tmp_path):
    root = tmp_path / "index"
    shutil.copytree(model_index.INDEX_DIR, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return root


@pytest.fixture
def tight(monkeypatch):
    """Limits small enough for a test to reach quickly; the mechanism is the one users get."""
    monkeypatch.setattr(bounded, "RENDER_SECONDS", 2.0)
    monkeypatch.setattr(bounded, "RENDER_EXTRA_BYTES", 256 << 20)


HOSTILE = {
    "repeated repetition": ("{{ ('x' * 10000) * 10000 * 10000 }}", "repetition too large"),
    "center filter": ("{{ 'x' | center(10 ** 9) }}", "center"),
    "center method": ("{{ 'x'.center(10 ** 9) }}", "center"),
    "huge power": ("{{ (10 ** 1000) ** 1000 }}", "too large"),
    "nested ranges": ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "range()"),
    "nested string loops": ("{% for a in 'x' * 3000 %}{% for b in 'x' * 3000 %}{% for c in 'x' * 3000 %}"
                            "{% endfor %}{% endfor %}{% endfor %}", "took more than"),
    "doubling through a namespace": ("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
                                     "{% endfor %}{{ ns.s | length }}", "memory budget"),
    "format width": ("{{ '{:>999999999}'.format('x') | length }}", "memory budget"),
    "after a multi-line comment": ("<!-- a note\nover\nthree lines -->\n{{ 'x' | center(10 ** 9) }}", "center"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_template_fails_located_and_bounded(capsys, index_copy, tight, case):
    expression, phrase = HOSTILE[case]
    page = index_copy / PAGE
    text = page.read_text()
    page.write_text(text.replace(HOOK, expression))
    line = text[: text.index(HOOK)].count("\n") + 1 + expression.count("\n")
    out = index_copy / "docs"
    start = time.monotonic()
    code = main(["docs", "--index", str(index_copy), "--out", str(out), "--results", str(index_copy / "none")])
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"{page.name}:{line}: cannot render the collection page" in err and phrase in err, err
    assert elapsed < 60  # a generous bound: the point is that it ends (the deadline is 2 s)
    assert not (out / "collections").exists()


def test_ordinary_page_features_still_render(index_copy):
    page = index_copy / PAGE
    page.write_text(page.read_text().replace(
        HOOK, "{% for m in models %}{{ m.id | upper | center(40) }} {{ '{:,}'.format(m.flops) }}{% endfor %}"
              "{{ range(3) | list | length }}{{ 'ab' * 3 }}{{ 2 ** 10 }}"))
    out = index_copy / "docs"
    assert main(["docs", "--index", str(index_copy), "--out", str(out), "--results", str(index_copy / "none")]) == 0
    rendered = (out / PAGE).read_text()
    assert "745,303,680" in rendered and "ababab" in rendered and "1024" in rendered


def test_limits_are_restored_after_rendering():
    import resource
    import signal

    before = resource.getrlimit(resource.RLIMIT_AS), signal.getsignal(signal.SIGALRM)
    with pytest.raises(bounded.RenderLimitError):
        with bounded.render_limits(seconds=0.2):
            while True:
                pass
    assert (resource.getrlimit(resource.RLIMIT_AS), signal.getsignal(signal.SIGALRM)) == before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_long_blank_runs_in_index_text_render_in_linear_time():
    """md_escape once used re.sub(r"\\s*\\n\\s*", ...), quadratic on a long run of spaces: minutes for 300 KB."""
    import subprocess
    import sys

    code = "from registry.docs.markup import md_escape; print(md_escape(' ' * 300_000 + 'x\\n\\n  y'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "x y"
