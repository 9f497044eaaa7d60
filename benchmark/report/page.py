"""The page the report writes: HTML and Markdown side by side (``_Page``), its tables, numbers and escaping, and
the files it ends as (``_write``: ``index.html`` and ``summary.md``; figures under ``figures/``).

Every text that comes from data (a model, a mixture, a finding's evidence) is escaped here, in both outputs:
``_Page``'s methods take plain text.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import io
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmark.analyse.stats import fmt_interval
from benchmark.cache import atomic_write_bytes
from benchmark.report import figures

VERDICT_COLOURS = {"holds": "#1b7837", "not shown": "#a6761d", "contradicted": "#b2182b"}
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1400px;padding:0 24px 48px;
color:#222;line-height:1.45}
h1{font-size:1.6em;margin-top:24px}h2{font-size:1.25em;margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:.88em;display:block;max-width:100%;overflow-x:auto}
td:first-child{white-space:nowrap}table.wrap td:first-child{white-space:normal;min-width:20em}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #eee;margin:6px 0}
.verdict{font-weight:600;white-space:nowrap}.note{color:#555;font-size:.9em}.small{font-size:.8em;color:#666}
details{margin:4px 0 10px}summary{cursor:pointer}
"""
CONTENTS = (("models", "models"), ("findings", "findings"), ("fitting", "Fig. 1"), ("sweep", "Fig. 3a"),
            ("d-known", "Fig. 3b"), ("linear", "Table 1"), ("mixtures", "Table 2"), ("p-true", "Fig. 5"),
            ("exposure", "exposure"), ("relations", "relations"))  # (anchor, link text) at the top of the page


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _interval(mean, low, high, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return fmt_interval(mean, float("nan") if low is None else low, float("nan") if high is None else high, digits)


def _table_html(header: list[str], rows: list[list[str]], numeric_from: int = 1, wrap: bool = False) -> str:
    """``header`` is plain text; ``rows`` are HTML (escaped by the caller). ``wrap``: the first column holds
    sentences, so it wraps and the other columns stay on the page."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td class='num'>{c}</td>" if i >= numeric_from else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table{' class=wrap' if wrap else ''}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md(text) -> str:
    """Text for the Markdown summary: Markdown passes raw HTML through, so ``<``, ``>`` and ``&`` in names (a model,
    a mixture, a finding's evidence) are escaped as in the HTML page; a renderer shows them as written."""
    return html.escape(str(text), quote=False)


def _table_md(header: list[str], rows: list[list[str]]) -> str:
    def clean(text: str) -> str:
        return _md(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(clean(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(clean(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value) -> str:
    """A table cell as HTML: escaped, a verdict in its colour."""
    text = html.escape(str(value))
    colour = VERDICT_COLOURS.get(str(value))
    return f"<span class='verdict' style='color:{colour}'>{text}</span>" if colour else text


class _Page:
    """Collects HTML and Markdown side by side; figures go to both (embedded / linked)."""

    def __init__(self, out: Path):
        self.out = out
        self.html: list[str] = []
        self.md: list[str] = []
        self.figures: list[str] = []
        (out / "figures").mkdir(parents=True, exist_ok=True)

    def heading(self, text: str, anchor: str) -> None:
        self.html.append(f"<h2 id='{anchor}'>{html.escape(text)}</h2>")
        self.md.append(f"\n## {_md(text)}\n")

    def text(self, text: str, note: bool = False) -> None:
        self.html.append(f"<p class='{'note' if note else ''}'>{html.escape(text)}</p>")
        self.md.append(_md(text) + "\n")

    def table(self, header: list[str], rows: list[list[str]], numeric_from: int = 1, wrap: bool = False) -> None:
        self.html.append(_table_html(header, [[_cell(c) for c in r] for r in rows], numeric_from, wrap))
        self.md.append(_table_md(header, rows) + "\n")

    @contextlib.contextmanager
    def details(self, name: str, what: str) -> Iterator[None]:
        """What is written inside the block folds away under "``name``: ``what``" on the page; Markdown cannot fold,
        so there it follows ``name`` in bold."""
        self.html.append(f"<details open><summary>{html.escape(name)}: {html.escape(what)}</summary>")
        self.md.append(f"\n**{_md(name)}**\n")
        yield
        self.html.append("</details>")

    def figure(self, name: str, build: Callable[[], object], alt: str) -> None:
        try:
            figure = build()
        except Exception as exc:  # one figure that cannot be drawn must not cost the whole report
            self.text(f"({name}: figure not drawn: {type(exc).__name__}: {exc})", note=True)
            return
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        figures.close(figure)
        data = buffer.getvalue()
        atomic_write_bytes(self.out / "figures" / f"{name}.png", data)
        self.figures.append(name)
        encoded = base64.b64encode(data).decode("ascii")
        self.html.append(f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{encoded}'>")
        self.md.append(f"![{_md(alt)}](figures/{name}.png)\n")


def _write(page: _Page, out: Path, title: str) -> dict:
    contents = " · ".join(f"<a href='#{a}'>{t}</a>" for a, t in CONTENTS)
    document = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{CSS}</style></head>"
                f"<body><h1>{html.escape(title)}</h1><p class='small'>{contents}</p>{''.join(page.html)}</body></html>")
    index = out / "index.html"
    atomic_write_bytes(index, document.encode("utf-8"))  # whole or not at all: a full disk leaves no torn page
    summary = out / "summary.md"
    atomic_write_bytes(summary, (f"# {_md(title)}\n\n" + "\n".join(page.md)).encode("utf-8"))
    return {"index": str(index), "summary": str(summary), "figures": [str(out / "figures" / f"{n}.png")
                                                                      for n in page.figures]}


def safe_slug(name: str, limit: int = 80) -> str:
    """``name`` as one folder name that stays where it is put: kept as it is when it is already one (letters,
    digits, ``-``, ``_``, inner dots; not ``.``/``..`` or hidden; at most ``limit`` characters), else its safe
    characters, cut to ``limit``, with a short hash of the whole name, so names that differ stay apart."""
    if len(name) <= limit and re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*", name) and name.strip(".") == name:
        return name
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:limit] or "report"
    return f"{slug}-{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
