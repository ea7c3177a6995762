"""A fuzz sweep of every command: each option (and each path argument) given values a careless or hostile user
would type (wrong type, negative, zero, huge, empty; a file, a folder, /proc, a FIFO, a missing path where a path
goes), one at a time, on top of a command line that works.

Each case runs the real CLI in this process (typer's runner) under a time bound and ends as one of:

  ok         exit 0 and something printed (the work was done)
  refused    a non-zero exit whose last line on stderr is one clear line (``error: ...``, or the option parser's
             own "Invalid value" / "No such option" message)
  TRACEBACK  an exception escaped the CLI
  HANG       the case ran past its time bound
  SILENT     exit 0 with nothing printed (nothing done, nothing said)
  UNCLEAR    a non-zero exit without one clear line
  LOST       a file of the user's (planted in the folder and beside the file every path option is pointed at)
             changed or vanished

The last four must never happen. ``sweep`` is what tests/test_cli_sweep.py runs; ``python scripts/bench_faults.py
--cli`` prints the tally.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

BAD = ("TRACEBACK", "HANG", "SILENT", "UNCLEAR", "LOST")
BASE = "(as is)"  # the case of a command's working line, unchanged
# Values for an option by its declared Python type.
INT_VALUES = ("-1", "0", "1000000000000", "1.5", "x", "")
FLOAT_VALUES = ("-1", "0", "nan", "inf", "1e309", "x", "")
TEXT_VALUES = ("", "x", "-1", "<!--<script>", "a,,b")
PARAM_VALUES = ("x", "=1", "width=abc", "standardize=maybe", "max_iter=0", "nope=1")
# Options and arguments that name a file or folder (typed str or Path).
PATHISH = re.compile(
    r"^(out|out_dir|report|runs_dir|cache_dir|source|run|run_dir|cache|caches|images|weights|backbone|h5_keys|exclude|image)$"
)
# The last line of a clear refusal: ours, or the option parser's.
CLEAR = re.compile(
    r"^(error: .+|.*(Invalid value|No such option|Missing (argument|option)|Got unexpected).*)$"
)


@dataclass
class Case:
    command: str
    option: str
    value: str
    outcome: str = ""
    seconds: float = 0.0
    detail: str = ""


@dataclass
class Workspace:
    """Tiny real inputs every command line starts from: images, a cache, a run, one image file, paths of every
    awkward kind."""

    root: Path
    paths: dict = field(default_factory=dict)
    count: int = 0  # cases run: each writes under its own numbered folder

    @classmethod
    def make(cls, root: Path) -> Workspace:
        from bottleneck import extract
        from bottleneck.runs import fit_head

        root = Path(root)
        ws = cls(root)
        rng = np.random.default_rng(0)
        images = root / "images"
        for split in ("train", "val", "test"):
            for k, name in enumerate(("ant", "bee")):
                folder = images / split / name
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(6):
                    pixels = (rng.integers(0, 150, (16, 16, 3)) + 60 * k).astype(np.uint8)
                    Image.fromarray(pixels).save(folder / f"{i}.png")
        cache = extract(images, backbone="pixels", image_size=16, cache_dir=root / "cache").cache
        run = fit_head(cache, "logreg", out=root / "run")
        # Fine-tuning needs a network with blocks: EfficientNet-Lite0 at 32 px, random weights (offline).
        lite = extract(
            images, backbone="efficientnet_lite0", weights="none", image_size=32, cache_dir=root / "cache"
        ).cache
        tunable = fit_head(lite, "logreg", out=root / "run-lite")
        awkward = root / "awkward"
        awkward.mkdir()
        (awkward / "file.txt").write_text("not what you think")
        (awkward / "folder").mkdir()
        # A user's files where an output path may point: the sweep counts any that change or vanish.
        (awkward / "folder" / "thesis.txt").write_text("years of work")
        (awkward / "folder" / "metrics.json").write_text('{"mine": true}')
        (awkward / "folder" / ".hidden.123.tmp").write_text("mine too")
        fifo = awkward / "fifo"
        os.mkfifo(fifo)
        ws.paths = {
            "images": images,
            "image": images / "test" / "ant" / "0.png",
            "cache": cache.path,
            "run": run.path,
            "tunable": tunable.path,
            "file": awkward / "file.txt",
            "folder": awkward / "folder",
            "fifo": fifo,
            "missing": awkward / "no" / "such" / "path",
        }
        return ws

    def planted(self) -> dict[str, bytes]:
        """The user's files of the awkward folder, as they are now."""
        root = self.paths["file"].parent
        return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != "fifo"}

    def path_values(self) -> tuple[str, ...]:
        p = self.paths
        return ("", str(p["file"]), str(p["folder"]), "/proc", str(p["fifo"]), str(p["missing"]))

    def base(self, command: str, case_dir: Path) -> list[str]:
        """A command line of ``command`` that works, writing only under ``case_dir``."""
        p = self.paths
        out = str(case_dir / "out")
        lines = {
            "extract": [str(p["images"]), "--backbone", "pixels", "--image-size", "16",
                        "--cache-dir", str(case_dir / "cache")],
            "info": [str(p["cache"])],
            "backbones": ["pixels"],
            "doctor": ["--cache-dir", str(case_dir)],
            "classify": [str(p["image"]), "--weights", "none", "--image-size", "32"],
            "fit-head": [str(p["cache"]), "--out", out],
            "evaluate": [str(p["run"]), str(p["cache"])],
            "compare": [str(p["cache"]), "--heads", "logreg", "--no-baseline", "--out", out],
            "predict": [str(p["run"]), str(p["image"])],
            "fine-tune": [str(p["tunable"]), "--epochs", "1", "--views", "0", "--unfreeze", "1", "--out", out],
            "export": [str(p["run"]), "--format", "keras", "--out", str(case_dir / "m.keras")],
            "advise": [str(p["images"]), "--no-fine-tune", "--weights", "none", "--image-size", "32",
                       "--per-class", "6", "--cache-dir", str(case_dir / "cache"), "--out", out],
            "inspect": [str(p["cache"]), "--no-page", "--out", out],
            "cache ls": ["--cache-dir", str(p["cache"].parent)],
            "cache verify": [str(p["cache"])],
            "cache rm": [str(_copy_cache(p["cache"], case_dir))],
            "cache gc": ["--cache-dir", str(p["cache"].parent), "--dry-run"],
            "cache export": [str(p["cache"]), str(case_dir / "exported")],
            "similar": [str(p["cache"]), str(p["image"]), "--k", "3", "--cache-dir", str(case_dir / "cache")],
            "datasets export fashion-mnist": [str(case_dir / "fm"), "--per-class", "1", "--no-download"],
        }  # fmt: skip
        return list(lines[command])


def _copy_cache(cache: Path, case_dir: Path) -> Path:
    dest = case_dir / "c" / cache.name
    shutil.copytree(cache, dest)
    return dest


def commands():
    """(name, command) of every leaf command of the CLI."""
    import typer.main

    from bottleneck.cli import app

    out = []

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
        else:
            out.append((" ".join(path), cmd))

    walk(typer.main.get_command(app), [])
    return out


def _values(param, ws: Workspace) -> tuple[str, ...]:
    annotation = param.type_descriptor.annotation
    name = param.name
    if name == "param":
        return PARAM_VALUES
    if PATHISH.match(name):
        return ws.path_values()
    if annotation is int:
        return INT_VALUES
    if annotation is float:
        return FLOAT_VALUES
    return TEXT_VALUES


def cases(ws: Workspace, only: set[str] | None = None) -> list[tuple[str, list[str], Case]]:
    """Every (command, the option and value to add or replace, its Case)."""
    out = []
    for name, cmd in commands():
        if only is not None and name not in only:
            continue
        out.append(
            (name, [], Case(name, BASE, ""))
        )  # the line as it is: must be ok, or the sweep tests nothing
        for param in cmd.params:
            if param.param_type_name == "option" and (param.is_flag or param.name in ("help",)):
                continue
            for value in _values(param, ws):
                flag = param.opts[0] if param.param_type_name == "option" else None
                out.append((name, [flag, value] if flag else [value], Case(name, flag or param.name, value)))
    return out


class _Timeout(BaseException):
    pass


@contextlib.contextmanager
def _bounded(seconds: float):
    def fire(signum, frame):
        raise _Timeout

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _line(name: str, base: list[str], change: list[str], param_name: str, positional: bool) -> list[str]:
    args = list(base)
    if positional:
        # A path argument: the value takes the place of the argument's base value (the first for `cache rm`).
        index = {"run_dir": 0, "cache": 0, "caches": 0, "images": 1 if name == "predict" else 0,
                 "source": 0, "out_dir": 0}.get(param_name, 0)  # fmt: skip
        if name == "evaluate" and param_name == "cache":
            index = 1
        args[index] = change[0]
        return args
    flag = change[0]
    if flag in args:  # replace the base's own value of this option
        i = args.index(flag)
        args[i + 1] = change[1]
        return args
    return args + change


def run_case(ws: Workspace, name: str, change: list[str], case: Case, bound: float) -> Case:
    from typer.testing import CliRunner

    from bottleneck.cli import app

    ws.count += 1
    case_dir = ws.root / "cases" / str(ws.count)
    case_dir.mkdir(parents=True)
    positional = not case.option.startswith("-")
    base = ws.base(name, case_dir)
    args = name.split() + (_line(name, base, change, case.option, positional) if change else base)
    t0 = time.perf_counter()
    try:
        with _bounded(bound):
            res = CliRunner().invoke(app, args, catch_exceptions=True)
    except _Timeout:
        case.outcome, case.detail = "HANG", f"past {bound:.0f} s"
        case.seconds = time.perf_counter() - t0
        return case
    case.seconds = time.perf_counter() - t0
    err = res.stderr.strip().splitlines() if res.stderr else []
    out = (res.stdout or "").strip()
    if isinstance(res.exception, _Timeout):
        case.outcome, case.detail = "HANG", f"past {bound:.0f} s"
    elif res.exception is not None and not isinstance(res.exception, SystemExit):
        case.outcome = "TRACEBACK"
        case.detail = f"{type(res.exception).__name__}: {str(res.exception)[:200]}"
    elif "Traceback (most recent call last)" in (res.output or ""):
        case.outcome, case.detail = "TRACEBACK", (res.output or "")[-300:]
    elif res.exit_code == 0:
        case.outcome = "ok" if (out or err) else "SILENT"
    elif case.option == BASE:
        case.outcome, case.detail = "BASE FAILED", f"exit {res.exit_code}: {(res.output or '')[-300:]}"
    elif err and CLEAR.match(_plain(err[-1])) or _usage_error(res.output or ""):
        case.outcome, case.detail = "refused", _plain(err[-1]) if err else ""
    elif name in ("doctor", "cache verify") and (out or err):
        case.outcome = "refused"  # they exit 1 when they find problems, listed one per line
    else:
        case.outcome, case.detail = "UNCLEAR", f"exit {res.exit_code}: {(res.output or '')[-300:]}"
    return case


def _plain(line: str) -> str:
    return re.sub(r"[│╭╮╰╯─]", "", line).strip()


def _usage_error(output: str) -> bool:
    """The option parser's own refusal (typer draws it in a box): a usage line and its one-line reason."""
    return "Usage:" in output and bool(
        re.search(r"Invalid value|No such option|Missing (argument|option)", output)
    )


def sweep(root: Path, *, only: set[str] | None = None, bound: float = 120.0, progress=None) -> list[Case]:
    """Run every case of every command (``only``: those commands) in a workspace under ``root``."""
    ws = Workspace.make(root)
    todo = cases(ws, only)
    planted = ws.planted()
    done = []
    for i, (name, change, case) in enumerate(todo):
        done.append(run_case(ws, name, change, case, bound))
        now = ws.planted()
        lost = sorted(set(planted) - set(now)) + sorted(
            k for k in planted if k in now and now[k] != planted[k]
        )
        if lost:  # the case that touched a user's file: counted, and the files put back for the next case
            done[-1].outcome, done[-1].detail = "LOST", ", ".join(lost)
            for k, v in planted.items():
                Path(k).parent.mkdir(parents=True, exist_ok=True)
                Path(k).write_bytes(v)
        if progress:
            progress(i + 1, len(todo), done[-1])
    return done


def tally(results: list[Case]) -> Counter:
    return Counter(c.outcome for c in results)


def main(argv=None) -> int:
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated command names (default: every command)")
    ap.add_argument(
        "--bound", type=float, default=120.0, help="seconds a case may take before it counts as a hang"
    )
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--save", type=Path, default=None, help="write every case (JSON lines) to this file")
    args = ap.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    root = args.work or Path(tempfile.mkdtemp(prefix="cli-sweep-"))

    def show(i, n, case):
        if case.outcome in BAD or case.option == BASE and case.outcome != "ok":
            print(f"{case.outcome:9} {case.command} {case.option} {case.value!r}: {case.detail}", flush=True)

    t0 = time.perf_counter()
    results = sweep(root, only=only, bound=args.bound, progress=show)
    counts = tally(results)
    if args.save:
        import json
        from dataclasses import asdict

        args.save.write_text("".join(json.dumps(asdict(c)) + "\n" for c in results))
    per = Counter(c.command for c in results)
    print(f"\n{len(results)} cases over {len(per)} commands in {time.perf_counter() - t0:.0f} s: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))  # fmt: skip
    slowest = sorted(results, key=lambda c: -c.seconds)[:5]
    print("slowest: " + "; ".join(f"{c.command} {c.option} {c.value!r} {c.seconds:.1f} s" for c in slowest))
    return 1 if any(counts[b] for b in (*BAD, "BASE FAILED")) else 0


if __name__ == "__main__":
    sys.exit(main())
