"""Markdown from user strings (report/tables.py): class, cache and split names that would break a table, make
markup or inject HTML render as themselves."""

from __future__ import annotations

import re

import numpy as np
import pytest

from bottleneck.report import classification_metrics, markdown_table, markdown_text, render_report

HOSTILE = [
    "<!--<script>",
    "</script><script>alert(1)</script>",
    "a|b",
    "`code`",
    "l\u2028s\nt",
    "&amp;",
    "# h",
]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("<!--<script>", "&lt;!--&lt;script&gt;"),
        ("</script><script>alert(1)</script>", "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("a|b", "a\\|b"),
        ("`code`", "\\`code\\`"),
        ("*x* _y_ [l](u)", "\\*x\\* \\_y\\_ \\[l\\](u)"),
        ("back\\slash", "back\\\\slash"),
        ("l\u2028s\nt\r\nu", "l s t  u"),
        ("&amp;", "&amp;amp;"),
        ("# h", "\\# h"),
        ("a # b", "a # b"),
        ("efficientnet_lite0-1a2b", "efficientnet\\_lite0-1a2b"),
        ("plain words 1.0", "plain words 1.0"),
    ],
)
def test_markdown_text(name, text):
    assert markdown_text(name) == text


def _cells(line: str) -> list[str]:
    # A cell border is a "|" not escaped by a backslash (an escaped backslash before it would be "\\\\|").
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]


def test_markdown_table_keeps_its_shape_with_hostile_cells():
    text = markdown_table(["class", "n"], [[n, 1] for n in HOSTILE])
    lines = text.splitlines()
    assert len(lines) == 2 + len(HOSTILE)
    assert all(len(_cells(line)) == 2 for line in lines)
    assert [_cells(line)[0] for line in lines[2:]] == [markdown_text(n) for n in HOSTILE]
    assert not set(text) & set("<>\u2028")


def test_render_report_escapes_class_cache_and_split_names():
    names = HOSTILE[:6]
    y = np.arange(6)
    cm = classification_metrics(y, np.eye(6)[y] * 0.9 + 0.02, class_names=names)
    summary = {
        "head": "logreg",
        "fit_seconds": 1.0,
        "params": {"C": 1.0},
        "cache": {"name": "a|b<i>", "path": "/data/`x`|y", "splits": {"te|st": 6}},
        "notes": ["line one\nline two"],
        "metrics": {"te|st": cm},
    }
    text = render_report(summary)
    assert text.startswith("# logreg head on a\\|b&lt;i&gt;\n")
    assert "- **cache**: /data/\\`x\\`\\|y" in text and "- **rows**: te\\|st 6" in text
    assert "## Per class (te\\|st)" in text and "- line one line two" in text
    assert not set(text) & set("<>\u2028")
    tables = [line for line in text.splitlines() if line.startswith("|")]
    per_class = [_cells(line) for line in tables if _cells(line)[0] in {markdown_text(n) for n in names}]
    assert [c[0] for c in per_class] == [markdown_text(n) for n in names]
    assert all(len(c) == 5 for c in per_class)
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == [
        "# logreg head on a\\|b&lt;i&gt;",
        "## Metrics",
        "## Per class (te\\|st)",
        "## Notes",
        "## Plots",
    ]
