"""A small HTML toolkit for the report: sections, tables, inline images, one stylesheet."""

from __future__ import annotations

import base64
import dataclasses
import html

import numpy as np

# --------------------------------------------------------------------------------------------
# HTML


@dataclasses.dataclass
class Section:
    """One section of the report page."""

    id: str
    title: str
    body: str


def img_tag(png: bytes, alt: str, element_id: str | None = None) -> str:
    """An ``<img>`` with the PNG embedded as base64."""
    ident = f' id="{html.escape(element_id)}"' if element_id else ""
    data = base64.b64encode(png).decode("ascii")
    return f'<img{ident} alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def html_table(
    header: list[str], rows: list[list], classes: list[str] | None = None, table_class: str = ""
) -> str:
    """A plain HTML table; cells are escaped unless they are :class:`RawHtml`."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        cells = "".join(
            f"<td>{c if isinstance(c, RawHtml) else html.escape(str(c))}</td>" for c in row
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    cls = f' class="{table_class}"' if table_class else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class RawHtml(str):
    """A table cell that is already HTML."""


def fmt(value, spec: str = ".3g") -> str:
    """A number for a table (``—`` for nan)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "—" if not np.isfinite(v) else format(v, spec)


CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 0;
       color: #222; background: #fafafa; }
header { background: #243447; color: white; padding: 14px 24px; }
header h1 { margin: 0; font-size: 22px; }
header p { margin: 4px 0 0; color: #cfd8e3; font-size: 13px; }
nav { background: #e8edf2; padding: 8px 24px; font-size: 14px; position: sticky; top: 0; }
nav a { margin-right: 14px; color: #243447; text-decoration: none; }
main { padding: 0 24px 40px; max-width: 1500px; }
section { background: white; border: 1px solid #dde3ea; border-radius: 6px; margin: 18px 0;
          padding: 6px 18px 16px; }
h2 { font-size: 18px; border-bottom: 1px solid #eee; padding-bottom: 4px; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #dde3ea; padding: 3px 8px; text-align: right; }
th { background: #f0f3f6; }
td:first-child, th:first-child { text-align: left; }
table.facts td { text-align: left; }
table.facts thead { display: none; }
tr.good td { background: #eef7ee; }
tr.warn td { background: #fff4e5; }
pre { background: #f6f8fa; padding: 8px; font-size: 12px; overflow-x: auto; }
figure { margin: 10px 0 18px; border-top: 1px solid #eee; }
figcaption { font-size: 13px; color: #555; }
.note { color: #555; font-size: 13px; }
.label-good { color: #1b7837; font-weight: bold; }
"""


def render_html(title: str, subtitle: str, sections: list[Section]) -> str:
    """The whole page: header, a link bar, the sections."""
    nav = "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(
        f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>{s.body}</section>' for s in sections
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>"
        f"<nav>{nav}</nav><main>{body}</main></body></html>\n"
    )
