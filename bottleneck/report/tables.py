"""Markdown and CSV tables, and the markdown report of a run."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence

import numpy as np

# Markdown's punctuation that can start markup (a code span, emphasis, a link, a cell border, an escape), backslash
# escaped; "<", ">" and "&" as entities (raw HTML is allowed in markdown); every line break (str.splitlines')
# as a space, so a name stays on its line and in its cell.
_MD_PUNCT = re.compile(r"[\\|`*_\[\]]")
_MD_HTML = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
_MD_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def markdown_text(value) -> str:
    """``value`` (a class name, an id, a path) as markdown text that renders as itself: no markup, no HTML, one
    line; a leading "#" is escaped too, so it never makes a heading."""
    text = _MD_BREAKS.sub(" ", _MD_PUNCT.sub(lambda m: "\\" + m.group(), str(value)))
    text = re.sub("[<>&]", lambda m: _MD_HTML[m.group()], text)
    return "\\" + text if text.startswith("#") else text


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub markdown table with padded columns (numbers right-aligned); every text cell through
    ``markdown_text``."""
    cells = [[markdown_text(h) for h in headers]] + [[_cell(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [
        any(_is_number(r[i]) for r in rows) and all(_is_number(r[i]) or r[i] is None for r in rows)
        for i in range(len(headers))
    ]

    def line(r):
        return (
            "| "
            + " | ".join(
                c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric, strict=True)
            )
            + " |"
        )

    sep = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric, strict=True)
        )
        + "|"
    )
    return "\n".join([line(cells[0]), sep, *[line(r) for r in cells[1:]]]) + "\n"


def csv_text(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(headers)
    w.writerows([[("" if v is None else v) for v in r] for r in rows])
    return buf.getvalue()


def _is_number(v) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float | np.floating):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
    return markdown_text(v)


def mean_std(values: Sequence[float], digits: int = 4) -> str:
    """'0.9123 ± 0.0021' for several values, '0.9123' for one."""
    v = np.asarray(values, np.float64)
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def render_report(summary: dict) -> str:
    """The markdown report of a fit-head run from its metrics.json dict (see ``bottleneck.runs``)."""
    cache = summary.get("cache", {})
    tuned = summary.get("kind") == "fine-tune"
    title = f"fine-tuned {summary['head']} head" if tuned else f"{summary['head']} head"
    lines = [f"# {markdown_text(title)} on {markdown_text(cache.get('name', '?'))}", ""]
    facts = _run_facts(summary) + (_tuning_facts(summary) if tuned else [])
    lines += [f"- **{k}**: {markdown_text(v)}" for k, v in facts if v not in (None, "")]
    lines += ["", "## Metrics", ""]
    metrics = summary["metrics"]
    lines.append(_metrics_table(metrics))
    frozen = (summary.get("frozen_metrics") or {}) if tuned else {}
    if frozen:
        lines.append(_frozen_vs_tuned(frozen, metrics))
    if metrics:
        split = "test" if "test" in metrics else next(iter(metrics))
        pc = metrics[split]["per_class"]
        lines += [f"## Per class ({markdown_text(split)})", ""]
        lines.append(
            markdown_table(
                ["class", "precision", "recall", "f1", "support"],
                [[n, v["precision"], v["recall"], v["f1"], v["support"]] for n, v in pc.items()],
            )
        )
    notes = summary.get("notes") or []
    if notes:
        lines += ["## Notes", "", *[f"- {markdown_text(n)}" for n in notes], ""]
    lines += [
        "## Plots",
        "",
        "![training history](history.png)",
        "",
        "![confusion matrix](confusion.png)",
        "",
    ]
    return "\n".join(lines)


def _run_facts(summary: dict) -> list[tuple]:
    """(name, value) facts of every run: its cache, features, rows, parameters, fit time and selection."""
    cache = summary.get("cache", {})
    cfg = cache.get("config") or {}
    facts = [
        ("cache", cache.get("path")),
        (
            "features",
            f"{cfg.get('backbone')} ({cfg.get('weights')} weights, pooling {cfg.get('pooling')}), "
            f"shape {tuple(cache.get('feature_shape', ()))}",
        ),
        ("rows", ", ".join(f"{k} {v}" for k, v in cache.get("splits", {}).items())),
        ("parameters", ", ".join(f"{k}={v}" for k, v in summary.get("params", {}).items())),
        ("fit time", f"{summary['fit_seconds']:.2f} s"),
    ]
    sel = summary.get("selection") or {}
    if sel:
        facts.append(("selection", ", ".join(f"{k} {v}" for k, v in sel.items())))
    return facts


def _tuning_facts(summary: dict) -> list[tuple]:
    """The facts a fine-tuned run adds: where it started, what was unfrozen, the start check, what it trained on."""
    start = summary.get("start_check") or {}
    return [
        ("started from", summary.get("start_run")),
        (
            "unfrozen",
            f"{summary['unfrozen']['description']} ({summary['unfrozen']['layers']} layers, "
            f"{summary['unfrozen']['trainable_parameters']:,} trainable parameters)",
        ),
        (
            "start check",
            f"max difference {start.get('difference', float('nan')):.2g} from the run on "
            f"{start.get('rows')} cached {start.get('split')} rows",
        ),
        (
            "trained on",
            f"cached activations ({summary['prefix_cache']})"
            if summary.get("prefix_cache")
            else "images through the whole network",
        ),
        ("seconds per epoch", ", ".join(f"{x:.1f}" for x in summary.get("epoch_seconds", []))),
    ]


def _metrics_table(metrics: dict) -> str:
    top5 = any("top5_accuracy" in m for m in metrics.values())
    headers = [
        "split",
        "n",
        "accuracy",
        "balanced accuracy",
        *(["top-5 accuracy"] if top5 else []),
        "log loss",
    ]
    rows = [
        [
            s,
            m["n"],
            m["accuracy"],
            m["balanced_accuracy"],
            *([m.get("top5_accuracy")] if top5 else []),
            m["log_loss"],
        ]
        for s, m in metrics.items()
    ]
    return markdown_table(headers, rows)


def _frozen_vs_tuned(frozen: dict, metrics: dict) -> str:
    extra = ["", "## Frozen head vs fine-tuned", ""]
    extra.append(
        markdown_table(
            ["split", "frozen accuracy", "fine-tuned accuracy"],
            [[s, frozen[s]["accuracy"], m["accuracy"]] for s, m in metrics.items() if s in frozen],
        )
    )
    return "\n".join(extra)
