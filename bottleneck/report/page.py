"""The one self-contained offline HTML page of an inspection or a run: sections rendered here, CSS and JS inline.

Nothing is fetched from a network (a Content-Security-Policy forbids it); thumbnails are files beside the page,
loaded lazily, so a 10 000-image split stays light. Interactive data (the cells of the confusion matrix and the
map) is embedded once as JSON and drawn by ``assets/page.js``.
"""

from __future__ import annotations

import json
import re
from html import escape
from importlib import resources

# A palette of 20 distinguishable colours (matplotlib's tab20 order, darker ones first).
COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip
CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
# Bidirectional controls (embeddings, overrides, isolates, marks): in a name they can show "photo\u202egpj.exe"
# as "photoexe.jpg". ``page.js`` has the same set (``shown``).
BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# In an inline script, "<!--" and "<script" change how HTML parses the rest of the element (a class named
# "<!--<script>" would swallow the page's script) and "</" ends it; U+2028/U+2029 end a line in older JS.
# Their JSON escapes are the same strings to JSON.parse and mean nothing to HTML.
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def render_page(data: dict) -> str:
    """The HTML of a page from its sections (see ``bottleneck.report.sections`` for their shapes)."""
    parts = [_header(data), _counts(data)]
    if data.get("leaks"):
        parts.append(_leaks(data["leaks"]))
    if data.get("comparison"):
        parts.append(_comparison(data["comparison"]))
    pred = data.get("predictions")
    if pred:
        parts += [
            _metrics(pred),
            _confusion(pred),
            _items_section("mistakes", "Worst mistakes", pred["mistakes"]),
        ]
    for key, title, pairs in data.get("pairs") or []:
        parts.append(_pairs(key, title, pairs))
    for key, title, block in data.get("strips") or []:  # a row of images: `similar --report`
        parts.append(_items_section(key, title, block))
    if data.get("label_errors") is not None:
        parts.append(_items_section("label-errors", "Suspected label errors", data["label_errors"]))
    if data.get("map"):
        parts.append(_map(data["map"]))
    if data.get("files"):
        parts.append(_files(data["files"]))
    script_data = {"thumbs": data.get("thumbs", "thumbs")}
    if pred:
        script_data |= {"labels": pred["labels"], "cells": pred["cells"]}
    if data.get("map"):
        script_data["map"] = {
            **data["map"]["points"],
            "colors": list(COLORS),
            "classes": data["map"]["classes"],
        }
    return _document(data["title"], "\n".join(parts), script_data)


def inline_json(value) -> str:
    """``value`` as JSON safe inside any HTML element (a ``<script>`` included): it parses back to ``value``."""
    text = json.dumps(value, separators=(",", ":"))
    # Outside strings JSON has none of these characters, so each one replaced is inside a string.
    return re.sub("[<>&\u2028\u2029]", lambda m: _JSON_ESCAPES[m.group()], text)


def shown(text) -> str:
    """``text`` as shown on a page: each bidirectional control replaced by its visible escape (``\\u202e``)."""
    return BIDI.sub(lambda m: f"\\u{ord(m.group()):04x}", str(text))


def _text(value) -> str:
    """A user string (a class name, an id, a path) as HTML text or a quoted attribute's value."""
    return escape(shown(value))


def _asset(name: str) -> str:
    return resources.files("bottleneck.report").joinpath("assets", name).read_text(encoding="utf-8")


def _document(title: str, body: str, script_data: dict) -> str:
    blob = inline_json(script_data)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{_text(title)}</title>
<style>
{_asset("page.css")}</style>
</head>
<body>
{body}
<script type="application/json" id="page-data">{blob}</script>
<script>
{_asset("page.js")}</script>
</body>
</html>
"""


def _header(data: dict) -> str:
    nav = "".join(f'<a href="#{k}">{_text(t)}</a>' for k, t in _sections(data))
    facts = "".join(f"<dt>{_text(k)}</dt><dd>{_text(v)}</dd>" for k, v in data.get("facts", []))
    sub = f'<p class="sub">{_text(data["subtitle"])}</p>' if data.get("subtitle") else ""
    return (
        f'<header><h1>{_text(data["title"])}</h1>{sub}<nav>{nav}</nav><dl class="facts">{facts}</dl></header>'
    )


def _sections(data: dict) -> list[tuple[str, str]]:
    out = [("counts", "Counts")]
    if data.get("comparison"):
        out.append(("comparison", "Comparison"))
    if data.get("predictions"):
        out += [("metrics", "Metrics"), ("confusion", "Confusion matrix"), ("mistakes", "Worst mistakes")]
    out += [(key, title) for key, title, _ in data.get("pairs") or []]
    out += [(key, title) for key, title, _ in data.get("strips") or []]
    if data.get("label_errors") is not None:
        out.append(("label-errors", "Label errors"))
    if data.get("map"):
        out.append(("map-section", "Map"))
    if data.get("files"):
        out.append(("files", "Files"))
    return out


def _counts(data: dict) -> str:
    cards = "".join(
        f'<div class="count"><span class="n" data-count="{escape(key)}">{_text(value)}</span>'
        f'<span class="what">{_text(label)}</span></div>'
        for key, label, value in data.get("counts", [])
    )
    return f'<section id="counts"><h2>Counts</h2><div class="counts">{cards}</div></section>'


def _leaks(leaks: list) -> str:
    rows = "".join(
        f'<tr><td class="l">{_text(name)}</td><td data-leak="{escape(name)}:exact">{_text(exact)}</td>'
        f'<td data-leak="{escape(name)}:near">{_text(near)}</td></tr>'
        for name, exact, near in leaks
    )
    return (
        '<section id="leaks-by-split"><h3>Duplicate pairs by split pair</h3><table><thead><tr><th>splits</th>'
        f"<th>exact</th><th>near</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _table(headers, rows) -> str:
    head = "".join(f"<th>{_text(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return _text("-" if v is None else v)


def _comparison(comp: dict) -> str:
    return (
        f'<section id="comparison"><h2>Comparison</h2>{_table(comp["headers"], comp["rows"])}'
        f'<p class="note">{_text(comp.get("note", ""))}</p></section>'
    )


def _metrics(pred: dict) -> str:
    rows = [
        [s, m["n"], m["accuracy"], m["balanced_accuracy"], m.get("top5_accuracy"), m["log_loss"]]
        for s, m in pred["metrics"].items()
    ]
    per_class = pred["metrics"][pred["split"]]["per_class"]
    pc_rows = [[n, v["precision"], v["recall"], v["f1"], v["support"]] for n, v in per_class.items()]
    return (
        f'<section id="metrics"><h2>Metrics</h2><p class="note">{_text(pred["source"])}</p>'
        f"{_table(['split', 'n', 'accuracy', 'balanced accuracy', 'top-5 accuracy', 'log loss'], rows)}"
        f"<h3>Per class ({_text(pred['split'])})</h3>"
        f"{_table(['class', 'precision', 'recall', 'f1', 'support'], pc_rows)}</section>"
    )


def _confusion(pred: dict) -> str:
    labels, cm = pred["labels"], pred["confusion"]
    head = '<th class="corner">true \\ predicted</th>' + "".join(f"<th>{_text(n)}</th>" for n in labels)
    body = []
    for t, row in enumerate(cm):
        total = max(1, sum(row))
        cells = []
        for p, count in enumerate(row):
            share = count / total
            # Blue for the diagonal, red off it; the share of the true class sets the strength.
            rgb = "31,111,235" if t == p else "207,34,46"
            style = f"background: rgba({rgb},{0.08 + 0.8 * share:.2f})" if count else ""
            dis = "" if count else " disabled"
            cells.append(
                f'<td><button class="cell" data-t="{t}" data-p="{p}" style="{style}"{dis}>{count}</button></td>'
            )
        body.append(f"<tr><th>{_text(labels[t])}</th>{''.join(cells)}</tr>")
    return (
        f'<section id="confusion"><h2>Confusion matrix ({_text(pred["split"])})</h2>'
        '<p class="note">Click a cell to see its images.</p>'
        f'<table class="confusion"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
        '<div id="cell-panel" hidden><h3 id="cell-title"></h3><div class="grid" id="cell-grid"></div></div>'
        "</section>"
    )


def _figure(item: dict, thumbs: str = "thumbs") -> str:
    if item.get("thumb"):
        img = (
            f'<img class="thumb" loading="lazy" decoding="async" src="{escape(thumbs)}/{escape(item["thumb"])}" '
            f'alt="{_text(item["id"])}">'
        )
    else:
        img = '<div class="nothumb">no image</div>'
    lines = "".join(f"<br>{_text(line)}" for line in item.get("lines", []))
    return f'<figure class="img">{img}<figcaption><b>{_text(item["id"])}</b>{lines}</figcaption></figure>'


def _shown_note(block: dict) -> str:
    n, total = len(block["items"]), block["total"]
    more = f" The first {n} of {total} are shown; the CSV lists all." if n < total else ""
    return f'<p class="note">{_text(block.get("note", ""))}{more}</p>'


def _items_section(key: str, title: str, block: dict) -> str:
    figs = "".join(_figure(it) for it in block["items"])
    empty = "" if block["items"] else '<p class="note">None found.</p>'
    return (
        f'<section id="{key}"><h2>{_text(title)} <span class="sub">({block["total"]})</span></h2>'
        f'{_shown_note(block)}{empty}<div class="grid" data-list="{key}">{figs}</div></section>'
    )


def _pairs(key: str, title: str, block: dict) -> str:
    pairs = "".join(
        f'<div class="pair"><span class="score">{p["score"]:.3f}</span>{_figure(p["a"])}{_figure(p["b"])}</div>'
        for p in block["items"]
    )
    empty = "" if block["items"] else '<p class="note">None found.</p>'
    return (
        f'<section id="{key}"><h2>{_text(title)} <span class="sub">({block["total"]})</span></h2>'
        f'{_shown_note(block)}{empty}<div class="grid" data-list="{key}">{pairs}</div></section>'
    )


def _map(m: dict) -> str:
    legend = "".join(
        f'<span><span class="swatch" style="background:{COLORS[i % len(COLORS)]}"></span>{_text(n)}</span>'
        for i, n in enumerate(m["classes"])
    )
    return (
        f'<section id="map-section"><h2>Map ({_text(m["method"])})</h2><p class="note">{_text(m["note"])}</p>'
        f'<div class="legend">{legend}<span>× mistake</span><span class="bad">○ suspected label error</span></div>'
        '<div class="map-wrap"><canvas id="map" width="900" height="640"></canvas><div id="map-tip" hidden></div>'
        "</div></section>"
    )


def _files(files: list) -> str:
    links = "".join(f'<li><a href="{escape(path)}">{_text(label)}</a></li>' for label, path in files)
    return f'<section id="files"><h2>Files</h2><ul>{links}</ul></section>'
