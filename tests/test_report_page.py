"""The offline page (report/page.py) with hostile class names and ids: escaped HTML, one inline JSON block that
parses back to the original strings, the page script intact, bidirectional controls shown as escapes."""

from __future__ import annotations

import json
import re
from html import escape
from html.parser import HTMLParser

import numpy as np
import pytest

from bottleneck.report.page import _asset, inline_json, render_page, shown
from bottleneck.report.sections import Predictions, map_section

CLASSES = [
    "<!--<script>",
    "</script><script>alert(1)</script>",
    "a|b",
    "l\u2028s",
    "&amp;",
    "photo\u202egpj.exe",
]
IDS = [f"{c}/{k}.png" for c in CLASSES for k in range(2)]


class FakeRows:
    """What the sections read of ``inspection.rows.Rows``: ids, labels and class names of global rows."""

    def __init__(self):
        self.class_names = list(CLASSES)
        self.label = np.repeat(np.arange(len(CLASSES)), 2)
        self.id = np.array(IDS)


def _page() -> tuple[str, dict]:
    rows = FakeRows()
    n, k = len(IDS), len(CLASSES)
    proba = np.full((n, k), 0.1 / (k - 1))
    proba[np.arange(n), rows.label] = 0.9
    proba[[1, 3, 11]] = proba[[3, 11, 1]]  # three mistakes, so the mistakes section names hostile ids too
    thumbs = {r: f"{r:02d}.png" for r in range(n)}
    pred = Predictions(rows, "test", np.arange(n), proba, np.arange(k), CLASSES[0])
    picked = np.arange(n)
    data = {
        "title": f"Inspection of {CLASSES[1]}",
        "subtitle": CLASSES[0],
        "facts": [("cache", CLASSES[5]), (CLASSES[2], CLASSES[4])],
        "counts": [("images", "images", n)],
        "predictions": pred.section(thumbs),
        "map": map_section(rows, picked, np.zeros((n, 2)), np.zeros(n, int), "pca", CLASSES[3]),
    }
    return render_page(data), data


def _data_block(page: str) -> str:
    (blob,) = re.findall(r'<script type="application/json" id="page-data">(.*?)</script>', page, re.S)
    return blob


def test_inline_json_escapes_html_and_line_separators_and_parses_back():
    value = {"a": CLASSES, "<k>": "x & y\u2029"}
    text = inline_json(value)
    assert json.loads(text) == value
    assert not set(text) & set("<>&\u2028\u2029")
    assert "\\u003c!--\\u003cscript\\u003e" in text and "\\u0026amp;" in text
    assert "\\u003c/script\\u003e\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in text
    assert "l\\u2028s" in text and "\\u2029" in text


def test_page_has_one_data_block_that_parses_back_and_the_script_intact():
    page, data = _page()
    blob = _data_block(page)
    back = json.loads(blob)  # as it is: no HTML unescaping
    assert back["labels"] == CLASSES
    assert back["map"]["classes"] == CLASSES and back["map"]["id"] == IDS
    cell_ids = [r[1] for cell in back["cells"].values() for r in cell["items"]]
    assert sorted(cell_ids) == sorted(IDS)
    assert not set(blob) & set("<>&\u2028\u2029")
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert page.count('id="page-data"') == 1
    assert f"<script>\n{_asset('page.js')}</script>\n</body>" in page

    class Elements(HTMLParser):
        """Elements as an HTML parser sees them (script content is raw text up to its end tag)."""

        def __init__(self):
            super().__init__()
            self.scripts, self.tags = [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            if tag == "script":
                self.scripts.append(dict(attrs))

    parsed = Elements()
    parsed.feed(page)
    assert parsed.scripts == [{"type": "application/json", "id": "page-data"}, {}]
    assert "alert" not in "".join(parsed.tags)


def test_names_are_escaped_in_text_and_attributes():
    page, _ = _page()
    outside = page.replace(_data_block(page), "").replace(_asset("page.js"), "")
    assert outside.count("<script") == 2  # no name made an element
    assert "<th>&lt;!--&lt;script&gt;</th>" in outside
    assert "<th>&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;</th>" in outside
    assert "<th>&amp;amp;</th>" in outside and "<th>a|b</th>" in outside
    assert "<title>Inspection of &lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;</title>" in outside
    assert 'alt="&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;/1.png"' in outside
    assert "<b>&lt;!--&lt;script&gt;/1.png</b>" in outside
    assert "<dt>a|b</dt><dd>&amp;amp;</dd>" in outside
    assert '<p class="note">&lt;!--&lt;script&gt;</p>' in outside


def test_bidirectional_controls_are_shown_as_escapes():
    assert shown("photo\u202egpj.exe") == "photo\\u202egpj.exe"
    controls = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    assert shown(controls) == "".join(f"\\u{ord(c):04x}" for c in controls)
    assert shown("שלום \u2028 ok") == "שלום \u2028 ok"  # right-to-left letters and other text unchanged
    page, _ = _page()
    assert "<th>photo\\u202egpj.exe</th>" in page and "<b>photo\\u202egpj.exe/1.png</b>" in page
    assert not re.search("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]", page)
    # The data keeps the names as they are (page.js shows them through the same escape).
    assert json.loads(_data_block(page))["labels"][5] == "photo\u202egpj.exe"
    assert "\\u2066-\\u2069]/g" in _asset("page.js")


@pytest.mark.parametrize("name", ["'quoted\"", "<img src=x onerror=alert(1)>"])
def test_attribute_values_stay_quoted(name):
    page = render_page({"title": "t", "files": [(name, name)]})
    assert f'<li><a href="{escape(name)}">{escape(name)}</a></li>' in page
    assert "<img" not in page and "'quoted\"" not in page
