"""Self-contained HTML pages for people: the run report (`mnist_mlops.pipelines.run_report`) and the
monitor's drift page. One file that opens anywhere with no network: the style is inline, figures are PNGs
embedded as data: URIs, there is no script, and the page's Content-Security-Policy forbids loading
anything else, so a page that would reach out fails loudly in the browser's console instead of silently.

Every value handed to these helpers is escaped; only the `Markup` they build passes through as markup, so
a class name or a gate's reason holding `<script>` stays text.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONTENT_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
TONES = {
    "good": ("done", "succeeded", "pass", "ok", "blessed", "deployed", "registered"),
    "info": ("cached", "running"),
    "warn": ("warn", "skipped", "insufficient_data", "no_reference", "accepted", "not run"),
    "bad": ("failed", "fail", "alert", "not blessed"),
}
"""The colour of an outcome word: green, blue, amber, red; any other word is grey."""
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1200px; padding: 0 16px;
       color: #1d232b; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; border-bottom: 1px solid #d5dbe1;
     padding-bottom: 4px; margin-top: 28px; } h3 { font-size: 15px; }
table { border-collapse: collapse; margin: 8px 0; } th, td { border: 1px solid #d5dbe1; padding: 3px 8px;
     text-align: left; vertical-align: top; } th { background: #f1f4f7; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; } dt { font-weight: 600; }
dd { margin: 0; overflow-wrap: anywhere; }
pre { background: #f6f8fa; padding: 10px; white-space: pre-wrap; font-size: 12px; }
img { max-width: 100%; border: 1px solid #e3e7eb; } .note { color: #6a737d; font-style: italic; }
.badge { border-radius: 3px; padding: 0 6px; font-weight: 600; white-space: nowrap; }
.tone-good { background: #dcf5e3; color: #14532d; } .tone-info { background: #dbeafe; color: #1e3a8a; }
.tone-warn { background: #fef3c7; color: #78350f; } .tone-bad { background: #fee2e2; color: #7f1d1d; }
.tone-neutral { background: #eceff3; color: #374151; }
svg .box rect { stroke: #4b5563; stroke-width: 1.2; } svg .box.tone-warn rect { stroke-dasharray: 4 3; }
svg .box.tone-good rect { fill: #dcf5e3; } svg .box.tone-info rect { fill: #dbeafe; }
svg .box.tone-warn rect { fill: #fffbeb; } svg .box.tone-bad rect { fill: #fee2e2; }
svg .box.tone-neutral rect { fill: #eceff3; } svg text { font: 12px system-ui, sans-serif; fill: #1d232b; }
svg text.name { font-weight: 700; font-size: 13px; } svg .edge { fill: none; stroke: #6b7280; }
"""
BOX_HEIGHT = 62
COLUMN_GAP = 56
ROW_GAP = 26
ARC_STEP = 12
"""Vertical distance between the arcs of edges that skip columns, so that nested arcs stay apart."""


class Markup(str):
    """HTML made by this module: already escaped, passed through as it is."""


def escape(value: object) -> Markup:
    return value if isinstance(value, Markup) else Markup(html.escape(str(value), quote=True))


def element(tag: str, *children: object, **attributes: object) -> Markup:
    """`<tag attributes>children</tag>`; `class_` is `class`, `data_node` is `data-node`; None is left out."""
    shown = "".join(
        f' {name.rstrip("_").replace("_", "-")}="{escape(value)}"'
        for name, value in attributes.items()
        if value is not None
    )
    return Markup(
        f"<{tag}{shown}>{''.join(escape(child) for child in children if child is not None)}</{tag}>"
    )


def join(parts: Iterable[object]) -> Markup:
    return Markup("".join(escape(part) for part in parts))


def tone(word: str) -> str:
    return next((name for name, words in TONES.items() if word.lower() in words), "neutral")


def badge(word: str) -> Markup:
    return element("span", word, class_=f"badge tone-{tone(word)}")


def paragraph(*parts: object) -> Markup:
    return element("p", *parts)


def note(text: str) -> Markup:
    """What a reader should know is missing, and why, where the content would be."""
    return element("p", text, class_="note")


def bullets(items: Iterable[object]) -> Markup:
    return element("ul", *(element("li", item) for item in items))


def shown(value: object) -> object:
    """A cell's value as people read it: a dash for nothing, floats to four significant digits."""
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else value


def facts(pairs: Iterable[tuple[str, object]]) -> Markup:
    """Label: value lines."""
    return element(
        "dl",
        *(join([element("dt", label), element("dd", shown(value))]) for label, value in pairs),
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> Markup:
    head = element("tr", *(element("th", header) for header in headers))
    body = [element("tr", *(element("td", shown(cell)) for cell in row)) for row in rows]
    return element("table", element("thead", head), element("tbody", *body))


def preformatted(text: str) -> Markup:
    return element("pre", text)


def image(path: Path, alt: str) -> Markup:
    """The PNG at `path` embedded in the page, or a note saying why it is not there."""
    try:
        data = path.read_bytes()
    except OSError:
        return note(f"{alt}: no {path.name} in {path.parent}")
    if not data.startswith(PNG_SIGNATURE):
        return note(f"{alt}: {path} is not a PNG image")
    return Markup(f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">')


@dataclass(frozen=True)
class Section:
    title: str
    body: Sequence[Markup]

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


def page(title: str, summary: Markup, sections: Sequence[Section]) -> str:
    """The whole document: title, a summary under it, a contents line, then each section."""
    contents = Markup(
        " · ".join(element("a", section.title, href=f"#{section.anchor}") for section in sections)
    )
    body = join(
        element("section", element("h2", section.title), *section.body, id=section.anchor)
        for section in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_POLICY}">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{element('h1', title)}{summary}{element('nav', contents)}{body}</body></html>\n"
    )


@dataclass(frozen=True)
class GraphNode:
    name: str
    status: str
    """Its outcome word (done, cached, failed, skipped, not run), which also picks its colour."""
    detail: str
    """The box's last line: its time, or the cache hit."""
    tooltip: str = ""


def graph(nodes: Sequence[GraphNode], edges: Iterable[tuple[str, str]]) -> Markup:
    """Nodes as boxes in columns, each a column right of everything it reads from, edges as arrows: the
    next column's by a curve, a farther one's by an arc over the boxes (under them from a lower row)."""
    names = [node.name for node in nodes]
    links = sorted({(source, target) for source, target in edges if {source, target} <= set(names)})
    column = _columns(names, links)
    rows: dict[int, int] = {}
    place: dict[str, tuple[int, int]] = {}
    reads = {target for _source, target in links}
    for name in sorted(names, key=lambda name: name not in reads):  # the main line on top, lookups below
        place[name] = (column[name], rows.get(column[name], 0))
        rows[column[name]] = place[name][1] + 1
    width = max(150, 8 * max(map(len, names), default=0) + 24)
    arcs = sorted(
        (link for link in links if column[link[1]] - column[link[0]] != 1),
        key=lambda link: abs(column[link[1]] - column[link[0]]),
    )
    over = [link for link in arcs if place[link[0]][1] == place[link[1]][1] == 0]
    under = [link for link in arcs if link not in over]
    top = ARC_STEP * (len(over) + 1)
    height = top + max(rows.values(), default=1) * (BOX_HEIGHT + ROW_GAP) + ARC_STEP * (len(under) + 1)

    def corner(name: str) -> tuple[float, float]:
        col, row = place[name]
        return 10 + col * (width + COLUMN_GAP), top + row * (BOX_HEIGHT + ROW_GAP)

    slots = {name: [link for link in arcs if name in link] for name in names}

    def slot(name: str, link: tuple[str, str]) -> float:
        x, _ = corner(name)
        return x + width * (slots[name].index(link) + 1) / (len(slots[name]) + 1)

    paths = []
    for source, target in links:
        (sx, sy), (tx, ty) = corner(source), corner(target)
        if (source, target) in over:
            level = top - ARC_STEP * (over.index((source, target)) + 1)
            x1, x2 = slot(source, (source, target)), slot(target, (source, target))
            d = f"M{x1:.0f},{sy} C{x1:.0f},{level} {x2:.0f},{level} {x2:.0f},{ty - 2}"
        elif (source, target) in under:
            level = height - ARC_STEP * (under.index((source, target)) + 1)
            x1, x2 = slot(source, (source, target)), slot(target, (source, target))
            start, end = sy + BOX_HEIGHT, ty + BOX_HEIGHT + 2
            d = f"M{x1:.0f},{start} C{x1:.0f},{level} {x2:.0f},{level} {x2:.0f},{end}"
        else:
            y1, y2, bend = sy + BOX_HEIGHT / 2, ty + BOX_HEIGHT / 2, COLUMN_GAP / 2
            d = f"M{sx + width},{y1} C{sx + width + bend},{y1} {tx - bend},{y2} {tx - 2},{y2}"
        paths.append(
            element(
                "path",
                element("title", f"{source} -> {target}"),
                class_="edge",
                d=d,
                marker_end="url(#arrow)",
            )
        )
    boxes = []
    for node in nodes:
        x, y = corner(node.name)
        boxes.append(
            element(
                "g",
                element("title", node.tooltip or node.name),
                element("rect", x=x, y=y, width=width, height=BOX_HEIGHT, rx=6),
                element("text", node.name, x=x + 10, y=y + 19, class_="name"),
                element("text", node.status, x=x + 10, y=y + 37, class_="status"),
                element("text", node.detail, x=x + 10, y=y + 54),
                class_=f"box tone-{tone(node.status)}",
                data_node=node.name,
                data_status=node.status,
            )
        )
    arrow = element(
        "marker",
        element("path", d="M0,0 L10,5 L0,10 z", fill="#6b7280"),
        id="arrow",
        viewBox="0 0 10 10",
        refX=9,
        refY=5,
        markerWidth=7,
        markerHeight=7,
        orient="auto",
    )
    total_width = 20 + (max(column.values(), default=0) + 1) * (width + COLUMN_GAP) - COLUMN_GAP
    return element(
        "svg",
        element("defs", arrow),
        *paths,
        *boxes,
        role="img",
        aria_label="pipeline graph",
        width=total_width,
        height=height,
        viewBox=f"0 0 {total_width} {height}",
    )


def _columns(names: list[str], links: list[tuple[str, str]]) -> dict[str, int]:
    """Each node's column: one right of the farthest node it reads from; a node reading nothing sits just
    left of its nearest reader (the champion's lookup beside training, not beside ingest)."""
    column = dict.fromkeys(names, 0)
    for _round in names:  # longest paths by relaxation; a cycle stops growing after len(names) rounds
        for source, target in links:
            column[target] = min(len(names), max(column[target], column[source] + 1))
    for name in names:
        readers = [column[target] for source, target in links if source == name]
        if readers and all(target != name for _source, target in links):
            column[name] = max(0, min(readers) - 1)
    return column
