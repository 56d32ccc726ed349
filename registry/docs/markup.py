"""Escaping for generated markdown pages: index strings are text, never markup.

MkDocs feeds the pages to Python-Markdown, which passes raw HTML through. So
every string that comes from the index or the results store is written as
HTML entities wherever it could otherwise become a tag, an attribute, a link
or a table cell (``md_escape``), and the prose of a collection page (which is
itself untrusted) goes through ``sanitize_prose``: no raw HTML, no images, no
link to a ``javascript:`` (or any non-web) URL, no attribute lists; ``$...$``
becomes MathML, so formulas render natively in the browser without a CDN.

Entities render the same in every markdown context that matters here
(paragraphs, table cells, raw HTML blocks); untrusted text is therefore never
put inside markdown code spans or fences, where entities would show literally.
"""
from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from typing import Any, Callable

from markupsafe import Markup

# Characters that HTML or Python-Markdown would interpret, as numeric entities.
_MD_ESCAPES = {
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
    "\\": "&#92;", "`": "&#96;", "*": "&#42;", "[": "&#91;", "]": "&#93;",
    "{": "&#123;", "}": "&#125;", "|": "&#124;", "$": "&#36;", "~": "&#126;",
}
_MD_ESCAPE_RE = re.compile("[" + re.escape("".join(_MD_ESCAPES)) + "]")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def md_escape(value: Any, *, keep_newlines: bool = False) -> Markup:
    """``value`` as inert markdown text: HTML and markdown specials as entities, on one line.

    Safe in paragraph text, table cells, admonition titles and double-quoted
    HTML attributes alike.
    """
    if isinstance(value, Markup):
        return value
    text = _CONTROL_RE.sub("", "" if value is None else str(value))
    text = _MD_ESCAPE_RE.sub(lambda m: _MD_ESCAPES[m.group(0)], text)
    if keep_newlines:
        return Markup(text.replace("\r\n", "\n"))
    return Markup(_one_line(text))


def _one_line(text: str) -> str:
    """Whitespace runs that hold a newline become one space, then strip; linear in time, where the
    regular expression ``\\s*\\n\\s*`` is quadratic on long blank runs."""
    parts = text.split("\n")
    if len(parts) == 1:
        return text.strip()
    pieces = [parts[0].rstrip(), *(part.strip() for part in parts[1:-1]), parts[-1].lstrip()]
    return " ".join(piece for piece in pieces if piece).strip()


def md_finalize(value: Any) -> Any:
    """Jinja ``finalize``: every ``{{ expression }}`` is escaped unless it is already ``Markup``."""
    if value is None:
        return Markup("")
    return value if isinstance(value, Markup) else md_escape(value)


def pre_block(text: Any, language: str = "text") -> Markup:
    """A code block for untrusted text, as one line of raw HTML (entities, ``&#10;`` for newlines).

    A markdown fence would show entities literally, and an unescaped fence could be
    closed from inside; this form is inert wherever it lands.
    """
    body = str(md_escape(text, keep_newlines=True)).replace("\n", "&#10;")
    lang = re.sub(r"[^a-z0-9-]", "", str(language).lower()) or "text"
    return Markup(f'<pre class="cc-pre"><code class="language-{lang}">{body}</code></pre>')


def inline_code(text: Any) -> Markup:
    return Markup(f"<code>{md_escape(text)}</code>")


_SAFE_SCHEMES = ("http", "https", "mailto")


def _normalized_url(url: str) -> str:
    # Browsers drop ASCII tab/newline anywhere in a URL and C0/space at its ends;
    # Python-Markdown drops backslash escapes. Judge the URL the way they will see it.
    return re.sub(r"[\x00-\x20\x7f\\]", "", html.unescape(url)).lower()


def url_is_safe(url: Any, *, allow_relative: bool = True) -> bool:
    if not isinstance(url, str) or not url.strip():
        return False
    normalized = _normalized_url(url).lstrip("<")  # "<url>", the angle-bracket form of a link target
    scheme = re.match(r"^([a-z][a-z0-9+.\-]*):", normalized)
    if scheme:
        return scheme.group(1) in _SAFE_SCHEMES
    if normalized.startswith("//"):
        return False  # protocol-relative: another host with the page's scheme
    return allow_relative


def safe_url(url: Any) -> Markup:
    """An ``href`` value: http(s)/mailto or relative URLs only (anything else becomes ``#``), attribute-escaped."""
    if not url_is_safe(url):
        return Markup("#")
    return md_escape(url)


def safe_link(url: Any, text: Any = None) -> Markup:
    """``<a href=...>text</a>`` for an index URL; plain text when the URL is not a safe one."""
    label = md_escape(text if text is not None else url)
    if not url_is_safe(url):
        return label
    return Markup(f'<a href="{safe_url(url)}">{label}</a>')


# ---------------------------------------------------------------------------
# Math: $...$ to MathML, re-serialised from a parsed tree through an allowlist
# ---------------------------------------------------------------------------

_MATHML_TAGS = {
    "math", "mrow", "mi", "mn", "mo", "ms", "msup", "msub", "msubsup", "mfrac", "msqrt", "mroot", "mtext",
    "mspace", "mstyle", "mover", "munder", "munderover", "mtable", "mtr", "mtd", "mpadded", "mphantom",
    "menclose", "merror",
}
_MATHML_ATTRS = {
    "display", "stretchy", "mathvariant", "fence", "separator", "lspace", "rspace", "accent", "accentunder",
    "movablelimits", "columnalign", "rowalign", "width", "height", "depth", "linethickness", "displaystyle",
    "scriptlevel", "notation", "minsize", "maxsize", "symmetric", "largeop", "form", "columnspacing",
    "rowspacing", "columnlines", "rowlines", "frame",
}
_MATH_RE = re.compile(r"(?<![\\$])\$(?!\s)([^$\n]+?)(?<![\s\\])\$(?!\$)")


class _UnsafeMath(ValueError):
    pass


def _serialize_mathml(element: ET.Element) -> str:
    tag = element.tag.rsplit("}", 1)[-1]
    if tag not in _MATHML_TAGS:
        raise _UnsafeMath(tag)
    attrs = ""
    for name, value in sorted(element.attrib.items()):
        name = name.rsplit("}", 1)[-1]
        if name not in _MATHML_ATTRS or not re.fullmatch(r"[\w .%+-]*", value):
            raise _UnsafeMath(name)
        attrs += f' {name}="{value}"'
    inner = str(md_escape(element.text or "", keep_newlines=True))
    for child in element:
        inner += _serialize_mathml(child) + str(md_escape(child.tail or "", keep_newlines=True))
    return f"<{tag}{attrs}>{inner}</{tag}>"


def latex_to_mathml(latex: str) -> Markup | None:
    """MathML for one inline formula, or None when it cannot be converted into allowlisted MathML."""
    try:
        from latex2mathml.converter import convert
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    try:
        tree = ET.fromstring(convert(latex))
        return Markup(_serialize_mathml(tree))
    except Exception:  # noqa: BLE001 - malformed LaTeX or markup smuggled through \text{}: show it as text
        return None


def math_markup(latex: str) -> Markup:
    """Inline MathML, wrapped in a ``<span>``: Python-Markdown takes a line that *starts* with ``<math>``
    (a block-level tag to it) for a raw HTML block and breaks the sentence apart; a span keeps it inline."""
    mathml = latex_to_mathml(latex)
    return Markup('<span class="formula">') + mathml + Markup("</span>") if mathml else md_escape(f"${latex}$")


# ---------------------------------------------------------------------------
# Untrusted markdown prose
# ---------------------------------------------------------------------------

_PROSE_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "{": "&#123;", "}": "&#125;"}
# An inline link's target, or a reference definition's (at any indentation: list items are dedented).
# The target runs to the next ")" or, for a definition, the end of its line: Python-Markdown
# accepts whitespace, even a newline, inside an href, and browsers drop it ("java\nscript:").
_LINK_TARGET_RE = re.compile(r"(\]\(\s*)([^)]*)|(^[ \t]*\[[^\[\]]*\]:[ \t]*\n?[ \t]*)(.*)", re.M)
_PLACEHOLDER_RE = re.compile(r"\x02(\d+)\x03")


def _neutralize_link(match: re.Match) -> str:
    prefix, target = (match.group(1), match.group(2)) if match.group(1) is not None else (match.group(3), match.group(4))
    if target and not target.startswith("#") and not url_is_safe(target):
        return f"{prefix}#"  # the link stays, pointing nowhere
    return match.group(0)


def sanitize_prose(text: str, stash: Callable[[Markup], str] | None = None) -> str:
    """Untrusted markdown prose made inert: markdown formatting and safe links stay, markup does not.

    - ``& < > { }`` become entities: no raw HTML, no autolinks, no attribute lists;
    - ``![`` loses its ``!``: no images, so no request to another host;
    - link targets that are not http(s)/mailto/relative become ``#``;
    - ``$...$`` becomes allowlisted MathML (handed to ``stash`` when given, which
      returns the placeholder to put in its place).
    """
    text = _CONTROL_RE.sub("", text)  # also makes the placeholders below unforgeable
    formulas: list[Markup] = []

    def formula(match: re.Match) -> str:
        formulas.append(math_markup(match.group(1)))
        return f"\x02{len(formulas) - 1}\x03"

    text = _MATH_RE.sub(formula, text)
    text = re.sub("[&<>{}]", lambda m: _PROSE_ESCAPES[m.group(0)], text)
    text = text.replace("![", "&#33;[")
    text = _LINK_TARGET_RE.sub(_neutralize_link, text)

    def restore(match: re.Match) -> str:
        math = formulas[int(match.group(1))]
        return stash(math) if stash else str(math)

    return _PLACEHOLDER_RE.sub(restore, text)
