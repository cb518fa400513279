"""One self-contained HTML page: inline CSS, figures embedded as base64 PNG, no script,
no external resource, so the file opens from disk in any browser, offline.

Every piece of text that reaches the page goes through `html.escape` here; callers pass
plain text and never build markup themselves.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1280px; padding: 0 24px 48px; color: #1d1d1f; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-top: 0.6em; }
.subtitle { color: #555; margin-top: 0; }
.banner { padding: 10px 14px; border-radius: 6px; margin: 12px 0; font-weight: 600; }
.banner.ok { background: #e6f4ea; border: 1px solid #8cc79f; }
.banner.warn { background: #fff4d6; border: 1px solid #e0b44c; }
.banner.replay { background: #e8eefc; border: 1px solid #7d9be0; margin-top: 0; }
.note { color: #444; font-size: 0.92em; }
.warning { background: #fff4d6; border-left: 4px solid #e0b44c; padding: 6px 10px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.9em; }
th, td { border: 1px solid #d0d0d0; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.facts th { width: 14em; }
figure { margin: 12px 0 24px; } figure img { max-width: 100%; height: auto; }
figcaption { color: #444; font-size: 0.9em; max-width: 60em; }
nav ol { columns: 2; } code { background: #f4f4f4; padding: 0 3px; }
"""


@dataclass
class Section:
    """One numbered part of the report: an anchor id, a title and its escaped body."""

    id: str
    title: str
    parts: list[str] = field(default_factory=list)

    def add(self, *parts: str) -> Section:
        self.parts.extend(parts)
        return self


def paragraph(text: str, css: str = "") -> str:
    attribute = f' class="{html.escape(css)}"' if css else ""
    return f"<p{attribute}>{html.escape(text)}</p>"


def warning(text: str) -> str:
    return paragraph(text, "warning")


def heading(text: str) -> str:
    return f"<h3>{html.escape(text)}</h3>"


def image(png: bytes, alt: str, caption: str, file_name: str | None = None) -> str:
    """A figure embedded as a base64 data URL (the page must not depend on other files)."""
    data = base64.b64encode(png).decode("ascii")
    also = f" (also {file_name} beside this page)" if file_name else ""
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
        f"<figcaption>{html.escape(caption + also)}</figcaption></figure>"
    )


def facts(rows: Sequence[tuple[str, str]]) -> str:
    """A two-column key/value table (the header of the report)."""
    body = "".join(
        f"<tr><th>{html.escape(key)}</th><td>{html.escape(value)}</td></tr>" for key, value in rows
    )
    return f'<table class="facts">{body}</table>'


def table(
    frame: pd.DataFrame,
    columns: Mapping[str, str] | None = None,
    formats: Mapping[str, Callable[[Any], str]] | None = None,
    table_id: str | None = None,
) -> str:
    """A DataFrame as an HTML table; `columns` picks and renames columns (source →
    header) and `formats` turns a column's values into text (default: `plain`)."""
    columns = dict(columns or {c: c for c in frame.columns})
    formats = formats or {}
    head = "".join(f"<th>{html.escape(label)}</th>" for label in columns.values())
    rows = []
    for record in frame.to_dict("records"):
        cells = []
        for source in columns:
            value = record.get(source)
            text = formats.get(source, plain)(value)
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            css = ' class="num"' if numeric else ""
            cells.append(f"<td{css}>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    attribute = f' id="{html.escape(table_id)}"' if table_id else ""
    return f"<table{attribute}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def plain(value: Any) -> str:
    """Readable text for one cell: integers without .0, floats to 4 significant digits."""
    if is_missing(value):
        return "—"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)


def page(
    title: str,
    subtitle: str,
    banner: tuple[str, str],
    sections: Sequence[Section],
    footer: str,
    replay: str | None = None,
) -> str:
    """The whole document: title, state banner, contents, numbered sections. `replay`,
    for a simulated study, is the page's first line, above the title, so nobody reads a
    replay's numbers as trained ones."""
    level, message = banner
    first = f'<div class="banner replay" id="replay">{html.escape(replay)}</div>' if replay else ""
    contents = "".join(
        f'<li><a href="#{html.escape(s.id)}">{html.escape(s.title)}</a></li>' for s in sections
    )
    body = "".join(
        f'<section id="{html.escape(s.id)}"><h2>{i}. {html.escape(s.title)}</h2>'
        f"{''.join(s.parts)}</section>"
        for i, s in enumerate(sections, start=1)
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"{first}<h1>{html.escape(title)}</h1>"
        f'<p class="subtitle">{html.escape(subtitle)}</p>'
        f'<div class="banner {html.escape(level)}" id="state">{html.escape(message)}</div>'
        f"<nav><ol>{contents}</ol></nav>{body}"
        f'<footer class="note">{html.escape(footer)}</footer>'
        "</body></html>\n"
    )
