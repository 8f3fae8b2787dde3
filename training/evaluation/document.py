"""A tiny document model for the evaluation report, rendered twice: Markdown and a self-contained HTML page
(plots embedded as base64 PNG, no external resource)."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str
    kind: str = "text"  # text | warning | note


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]


@dataclass
class Plot:
    name: str
    png: bytes
    caption: str


@dataclass
class Doc:
    blocks: list = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(Heading(level, text))

    def p(self, text: str, kind: str = "text") -> None:
        self.blocks.append(Para(text, kind))

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.blocks.append(Table(list(columns), [[_cell(v) for v in r] for r in rows]))

    def plot(self, name: str, png: bytes, caption: str) -> None:
        self.blocks.append(Plot(name, png, caption))


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: Doc) -> str:
    """The document as Markdown (plots as ``<name>.png`` links)."""
    out: list[str] = []
    for b in doc.blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            out.append({"warning": f"> **⚠ {b.text}**", "note": f"> {b.text}"}.get(b.kind, b.text))
        elif isinstance(b, Table):
            out.append("| " + " | ".join(_md_escape(c) for c in b.columns) + " |")
            out.append("|" + "---|" * len(b.columns))
            out += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in b.rows]
        else:
            out.append(f"![{b.caption}]({b.name}.png)\n\n*{b.caption}*")
        out.append("")
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.2em;font-size:0.85em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left}th{background:#f2f2f2}
.warning{border:3px solid #c00;background:#fee;color:#900;font-weight:bold;font-size:1.15em;padding:0.8em}
.note{border-left:4px solid #888;background:#f6f6f6;padding:0.5em 0.8em}
.reference{border:2px dashed #888;background:#fafafa;padding:0 1em 1em;margin-top:2em}
figure{margin:0.5em 0 1.5em}img{max-width:100%}figcaption{font-size:0.85em;color:#555}
"""


def render_html(doc: Doc, title: str, boxed: str | None = None) -> str:
    """A self-contained HTML page; the section under the level-1/2 heading ``boxed`` is drawn in a box."""
    e = html.escape
    out = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
        f"<style>{_CSS}</style></head><body>"
    ]
    in_reference = False
    for b in doc.blocks:
        if isinstance(b, Heading):
            if b.level <= 2 and in_reference:
                out.append("</section>")
                in_reference = False
            if boxed is not None and b.text == boxed:
                out.append('<section class="reference">')
                in_reference = True
            out.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            cls = f' class="{b.kind}"' if b.kind != "text" else ""
            out.append(f"<p{cls}>{e(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{e(c)}</th>" for c in b.columns)
            body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b.rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        else:
            data = base64.b64encode(b.png).decode("ascii")
            out.append(
                f'<figure><img alt="{e(b.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{e(b.caption)}</figcaption></figure>"
            )
    if in_reference:
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)


# ---- lineage --------------------------------------------------------------------------------------
