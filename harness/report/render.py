"""The report as a list of blocks, and its two renderings: Markdown and one self-contained HTML page.

Both files are rendered from the same blocks (headings, paragraphs, bullets, tables, images), so
the Markdown and the HTML cannot disagree. A cell or a bullet carries its status (``ok``, ``bad``,
``inconclusive``, ``skip``) from the record it shows (its recorded verdict and outcome, see
:func:`harness.report.tables.status_of`): the renderer colours by that status and never reads the
text to guess a verdict.

Every text is rendered through :func:`harness.safe_names.printable` (a control character, a line
separator or a lone surrogate from a results file is shown escaped, a newline is a line break
inside its cell or paragraph), then escaped for its format: in HTML every ``<&"``; in Markdown a
``<`` (no raw HTML), a ``|`` in a table cell, a block marker opening a paragraph or a bullet (``#``,
``-``, ``1.``...), brackets in an image's alt text, and the image's path as a URL. A name from data
can neither break a table row nor start a heading or a tag.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from harness.safe_names import printable

OK, BAD, SKIP = "ok", "bad", "skip"
INCONCLUSIVE = "inconclusive"  # too few images to decide: neither a pass nor a fail (the three-way gates)
ALLOWED = "allowed"  # inconclusive, and --inconclusive allow passed the test: never shown as a pass
ERROR = "error"  # the test failed without a failing verdict (it stopped before its gates)
NEUTRAL = "neutral"  # a passed test with no gate of its own (figures read from elsewhere)
LONG_NOTE = 220  # characters: a longer note or cell is shown whole, its rest behind "more" in HTML


@dataclass(frozen=True)
class Cell:
    """Plain text (a newline is a line break) and the status that colours it."""

    text: str
    status: str = ""
    href: str = ""  # an anchor of this report (``#...``) the cell links to, in HTML


Text = str | Cell


def cell(value: Text) -> Cell:
    return value if isinstance(value, Cell) else Cell(value)


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    anchor: str = ""


@dataclass(frozen=True)
class Para:
    text: str
    css: str = ""


@dataclass(frozen=True)
class Bullets:
    items: tuple[Text, ...]
    css: str = ""


@dataclass(frozen=True)
class Table:
    """``align`` per column: l or r. ``css`` names the table (accuracy, perf, history, ...).

    ``fold_from``: in HTML the columns from this index on are folded into one expandable ``more``
    cell per row (secondary figures: the page stays within 1400 px); Markdown shows them as columns.
    ``anchors``: an id per row (or ``""``), for links from the verdict matrix."""

    headers: tuple[str, ...]
    rows: tuple[tuple[Text, ...], ...]
    align: tuple[str, ...] = ()
    css: str = ""
    fold_from: int | None = None
    anchors: tuple[str, ...] = ()


def without_empty_columns(table: Table, empty: str, keep: int = 1) -> tuple[Table, tuple[str, ...]]:
    """``table`` without the columns (after the first ``keep``) in which no row has data (every cell
    is ``empty`` or blank), and the headers of the columns dropped."""
    def blank(value: Text) -> bool:
        return cell(value).text.strip() in ("", empty)

    kept = [i for i in range(len(table.headers)) if i < keep or not all(blank(row[i]) for row in table.rows)]
    if len(kept) == len(table.headers):
        return table, ()
    align = table.align or ("l",) * len(table.headers)
    fold = table.fold_from
    shown = Table(headers=tuple(table.headers[i] for i in kept),
                  rows=tuple(tuple(r[i] for i in kept) for r in table.rows),
                  align=tuple(align[i] for i in kept), css=table.css,
                  fold_from=None if fold is None else sum(1 for i in kept if i < fold), anchors=table.anchors)
    return shown, tuple(table.headers[i] for i in range(len(table.headers)) if i not in kept)


@dataclass(frozen=True)
class Image:
    rel_path: str
    alt: str
    png: bytes


Block = Heading | Para | Bullets | Table | Image


# --------------------------------------------------------------------------------------------
# Markdown


# a paragraph or bullet starting like this would open another block (heading, list, quote, table, code)
_BLOCK_START = re.compile(r"( {0,3})(?:([#>+*=|`~_-])|\d{1,9}([.)]))")


def _md_text(text: str) -> str:
    """Inline Markdown of ``text``: escaped control characters, no raw HTML, newlines as ``<br>``."""
    return printable(text, newlines=True).replace("<", "&lt;").replace("\n", "<br>")


def _md_block(text: str) -> str:
    """:func:`_md_text` that cannot open another block: a leading marker is backslash-escaped."""
    text = _md_text(text)
    m = _BLOCK_START.match(text)
    if m is None:
        return text
    at = m.start(2) if m.group(2) else m.start(3)
    return text[:at] + "\\" + text[at:]


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "&#124;")


def render_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {_md_text(b.text)}\n")
        elif isinstance(b, Para):
            out.append(_md_block(b.text) + "\n")
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {_md_block(cell(item).text)}" for item in b.items) + "\n")
        elif isinstance(b, Table):
            align = b.align or ("l",) * len(b.headers)
            out.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
            out.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
            out.extend("| " + " | ".join(_md_cell(cell(c).text) for c in row) + " |" for row in b.rows)
            out.append("")
        elif isinstance(b, Image):
            alt = _md_text(b.alt).replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")
            out.append(f"![{alt}]({quote(b.rel_path)})\n")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# HTML

CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Noto Sans", Arial, sans-serif;
       margin: 16px; color: #1b1f24; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { font-size: 20px; margin-top: 32px; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 16px; margin-top: 20px; }
.scroll { overflow-x: auto; margin: 8px 0 12px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 4px 6px; vertical-align: top; }
th { background: #f3f5f7; text-align: left; font-weight: 600; }
td { white-space: nowrap; } td.r { text-align: right; font-variant-numeric: tabular-nums; }
table.runs td { white-space: normal; min-width: 6em; max-width: 28em; }
tr:nth-child(even) td { background: #fafbfc; }
table.perf tr:last-child td { font-weight: 600; border-top: 2px solid #57606a; }
td.bad, li.bad { background: #ffebe9 !important; color: #a40e26; font-weight: 600; }
td.ok, li.ok { color: #116329; } td.skip, li.skip { color: #6e7781; } td.neutral { color: #1b1f24; }
td.inconclusive, li.inconclusive { background: #ffe7b3 !important; color: #7d4e00; font-weight: 600; }
td.allowed, li.allowed { background: #fff8c5 !important; color: #7d4e00; outline: 2px dashed #d4a72c;
                         outline-offset: -3px; }
td.error, li.error { background: #f3e8ff !important; color: #6639ba; font-weight: 600; }
table.matrix td { white-space: normal; min-width: 5em; max-width: 16em; overflow-wrap: anywhere; }
table.matrix td.ok { background: #dafbe1 !important; } table.matrix td.skip { background: #f3f5f7 !important; }
table.matrix th { white-space: normal; min-width: 5.5em; max-width: 14em; overflow-wrap: anywhere; }
table.matrix td:first-child { white-space: nowrap; overflow-wrap: normal; max-width: none; }
td a { color: inherit; } td.fold { white-space: normal; min-width: 3em; }
td.fold details[open] { min-width: 24em; } details ul { margin: 2px 0; padding-left: 16px; }
summary { cursor: pointer; color: #0969da; }
.regressions { border: 2px solid #cf222e; padding: 4px 12px; } .clean { color: #116329; }
.note { color: #57606a; font-size: 12px; } img { max-width: 100%; border: 1px solid #d0d7de; }
"""


def _classes(*names: str) -> str:
    names = tuple(n for n in names if n)
    return f' class="{" ".join(names)}"' if names else ""


def _html_text(text: str) -> str:
    return html.escape(printable(text, newlines=True)).replace("\n", "<br>")


def _html_cell(value: Text) -> str:
    """A cell's text, a link when it has one; a long text's rest behind ``more``."""
    c = cell(value)
    text = _long_html(c.text)
    return f'<a href="#{html.escape(quote(printable(c.href)))}">{text}</a>' if c.href else text


def _long_html(text: str) -> str:
    """Short text as it is; a long one whole, its first words shown and the rest expandable (never cut)."""
    text = printable(text, newlines=True)
    if len(text) <= LONG_NOTE:
        return _html_text(text)
    at = text.rfind(" ", 0, LONG_NOTE - 40)
    at = at if at > 0 else LONG_NOTE - 40
    return (f"{_html_text(text[:at])}<details><summary>more ({len(text) - at:,} characters)</summary>"
            f"{_html_text(text[at:])}</details>")


def _fold_cell(headers: Sequence[str], cells: Sequence[Text]) -> str:
    items = "".join(f"<li{_classes(cell(c).status)}>{_html_text(' '.join(h.split()))}: {_html_cell(c)}</li>"
                    for h, c in zip(headers, cells, strict=True))
    return f'<td class="fold"><details><summary>more</summary><ul>{items}</ul></details></td>'


def _html_table(b: Table) -> str:
    align = b.align or ("l",) * len(b.headers)
    fold = len(b.headers) if b.fold_from is None or b.fold_from >= len(b.headers) else b.fold_from
    shown = b.headers[:fold] + ((f"more ({len(b.headers) - fold} columns)",) if fold < len(b.headers) else ())
    head = "".join(f"<th>{_html_text(h)}</th>" for h in shown)
    rows = []
    for i, row in enumerate(b.rows):
        anchor = b.anchors[i] if i < len(b.anchors) else ""
        tds = "".join(f"<td{_classes('r' if a == 'r' else '', cell(c).status)}>{_html_cell(c)}</td>"
                      for c, a in zip(row[:fold], align[:fold], strict=True))
        if fold < len(b.headers):
            tds += _fold_cell(b.headers[fold:], row[fold:])
        row_id = f' id="{html.escape(printable(anchor))}"' if anchor else ""
        rows.append(f"<tr{row_id}>{tds}</tr>")
    return (f'<div class="scroll"><table class="{b.css}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def render_html(blocks: Sequence[Block], title: str) -> str:
    parts = []
    for b in blocks:
        if isinstance(b, Heading):
            anchor = f' id="{html.escape(printable(b.anchor))}"' if b.anchor else ""
            parts.append(f"<h{b.level}{anchor}>{_html_text(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            parts.append(f"<p{_classes(b.css)}>{_html_text(b.text)}</p>")
        elif isinstance(b, Bullets):
            items = "".join(f"<li{_classes(cell(i).status)}>{_html_cell(i)}</li>" for i in b.items)
            parts.append(f"<ul{_classes(b.css)}>{items}</ul>")
        elif isinstance(b, Table):
            parts.append(_html_table(b))
        elif isinstance(b, Image):
            data = base64.b64encode(b.png).decode("ascii")
            parts.append(f'<p><img alt="{html.escape(printable(b.alt))}" src="data:image/png;base64,{data}"></p>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(printable(title))}</title>"
        f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
