"""The one self-contained offline HTML page of an inspection or a run: sections rendered here, CSS and JS inline.

Nothing is fetched from a network (a Content-Security-Policy forbids it); thumbnails are files beside the page,
loaded lazily, so a 10 000-image split stays light. Interactive data (the cells of the confusion matrix and the
map) is embedded once as JSON and drawn by ``assets/page.js``.
"""

from __future__ import annotations

import json
from html import escape
from importlib import resources

# A palette of 20 distinguishable colours (matplotlib's tab20 order, darker ones first).
COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip
CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


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


def _asset(name: str) -> str:
    return resources.files("bottleneck.report").joinpath("assets", name).read_text(encoding="utf-8")


def _document(title: str, body: str, script_data: dict) -> str:
    # "</" inside a script element would end it early; JSON allows the escaped form.
    blob = json.dumps(script_data, separators=(",", ":")).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{escape(title)}</title>
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
    nav = "".join(f'<a href="#{k}">{escape(t)}</a>' for k, t in _sections(data))
    facts = "".join(f"<dt>{escape(str(k))}</dt><dd>{escape(str(v))}</dd>" for k, v in data.get("facts", []))
    sub = f'<p class="sub">{escape(data["subtitle"])}</p>' if data.get("subtitle") else ""
    return (
        f"<header><h1>{escape(data['title'])}</h1>{sub}<nav>{nav}</nav>"
        f'<dl class="facts">{facts}</dl></header>'
    )


def _sections(data: dict) -> list[tuple[str, str]]:
    out = [("counts", "Counts")]
    if data.get("comparison"):
        out.append(("comparison", "Comparison"))
    if data.get("predictions"):
        out += [("metrics", "Metrics"), ("confusion", "Confusion matrix"), ("mistakes", "Worst mistakes")]
    out += [(key, title) for key, title, _ in data.get("pairs") or []]
    if data.get("label_errors") is not None:
        out.append(("label-errors", "Label errors"))
    if data.get("map"):
        out.append(("map-section", "Map"))
    if data.get("files"):
        out.append(("files", "Files"))
    return out


def _counts(data: dict) -> str:
    cards = "".join(
        f'<div class="count"><span class="n" data-count="{escape(key)}">{value}</span>'
        f'<span class="what">{escape(label)}</span></div>'
        for key, label, value in data.get("counts", [])
    )
    return f'<section id="counts"><h2>Counts</h2><div class="counts">{cards}</div></section>'


def _leaks(leaks: list) -> str:
    rows = "".join(
        f'<tr><td class="l">{escape(name)}</td><td data-leak="{escape(name)}:exact">{exact}</td>'
        f'<td data-leak="{escape(name)}:near">{near}</td></tr>'
        for name, exact, near in leaks
    )
    return (
        '<section id="leaks-by-split"><h3>Duplicate pairs by split pair</h3><table><thead><tr><th>splits</th>'
        f"<th>exact</th><th>near</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _table(headers, rows) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return escape("-" if v is None else str(v))


def _comparison(comp: dict) -> str:
    return (
        f'<section id="comparison"><h2>Comparison</h2>{_table(comp["headers"], comp["rows"])}'
        f'<p class="note">{escape(comp.get("note", ""))}</p></section>'
    )


def _metrics(pred: dict) -> str:
    rows = [
        [s, m["n"], m["accuracy"], m["balanced_accuracy"], m.get("top5_accuracy"), m["log_loss"]]
        for s, m in pred["metrics"].items()
    ]
    per_class = pred["metrics"][pred["split"]]["per_class"]
    pc_rows = [[n, v["precision"], v["recall"], v["f1"], v["support"]] for n, v in per_class.items()]
    return (
        f'<section id="metrics"><h2>Metrics</h2><p class="note">{escape(pred["source"])}</p>'
        f"{_table(['split', 'n', 'accuracy', 'balanced accuracy', 'top-5 accuracy', 'log loss'], rows)}"
        f"<h3>Per class ({escape(pred['split'])})</h3>"
        f"{_table(['class', 'precision', 'recall', 'f1', 'support'], pc_rows)}</section>"
    )


def _confusion(pred: dict) -> str:
    labels, cm = pred["labels"], pred["confusion"]
    head = '<th class="corner">true \\ predicted</th>' + "".join(f"<th>{escape(n)}</th>" for n in labels)
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
        body.append(f"<tr><th>{escape(labels[t])}</th>{''.join(cells)}</tr>")
    return (
        f'<section id="confusion"><h2>Confusion matrix ({escape(pred["split"])})</h2>'
        '<p class="note">Click a cell to see its images.</p>'
        f'<table class="confusion"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
        '<div id="cell-panel" hidden><h3 id="cell-title"></h3><div class="grid" id="cell-grid"></div></div>'
        "</section>"
    )


def _figure(item: dict, thumbs: str = "thumbs") -> str:
    if item.get("thumb"):
        img = (
            f'<img class="thumb" loading="lazy" decoding="async" src="{thumbs}/{escape(item["thumb"])}" '
            f'alt="{escape(item["id"])}">'
        )
    else:
        img = '<div class="nothumb">no image</div>'
    lines = "".join(f"<br>{escape(line)}" for line in item.get("lines", []))
    return f'<figure class="img">{img}<figcaption><b>{escape(item["id"])}</b>{lines}</figcaption></figure>'


def _shown(block: dict) -> str:
    n, total = len(block["items"]), block["total"]
    more = f" The first {n} of {total} are shown; the CSV lists all." if n < total else ""
    return f'<p class="note">{escape(block.get("note", ""))}{more}</p>'


def _items_section(key: str, title: str, block: dict) -> str:
    figs = "".join(_figure(it) for it in block["items"])
    empty = "" if block["items"] else '<p class="note">None found.</p>'
    return (
        f'<section id="{key}"><h2>{escape(title)} <span class="sub">({block["total"]})</span></h2>'
        f'{_shown(block)}{empty}<div class="grid" data-list="{key}">{figs}</div></section>'
    )


def _pairs(key: str, title: str, block: dict) -> str:
    pairs = "".join(
        f'<div class="pair"><span class="score">{p["score"]:.3f}</span>{_figure(p["a"])}{_figure(p["b"])}</div>'
        for p in block["items"]
    )
    empty = "" if block["items"] else '<p class="note">None found.</p>'
    return (
        f'<section id="{key}"><h2>{escape(title)} <span class="sub">({block["total"]})</span></h2>'
        f'{_shown(block)}{empty}<div class="grid" data-list="{key}">{pairs}</div></section>'
    )


def _map(m: dict) -> str:
    legend = "".join(
        f'<span><span class="swatch" style="background:{COLORS[i % len(COLORS)]}"></span>{escape(n)}</span>'
        for i, n in enumerate(m["classes"])
    )
    return (
        f'<section id="map-section"><h2>Map ({escape(m["method"])})</h2><p class="note">{escape(m["note"])}</p>'
        f'<div class="legend">{legend}<span>× mistake</span><span class="bad">○ suspected label error</span></div>'
        '<div class="map-wrap"><canvas id="map" width="900" height="640"></canvas><div id="map-tip" hidden></div>'
        "</div></section>"
    )


def _files(files: list) -> str:
    links = "".join(f'<li><a href="{escape(path)}">{escape(label)}</a></li>' for label, path in files)
    return f'<section id="files"><h2>Files</h2><ul>{links}</ul></section>'
