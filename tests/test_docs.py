"""The docs: the site builds in strict mode, every code block of README.md and docs/ runs (or says why not), every
`bottleneck` command line in them is a real command with real options, and the inspect screenshot is the
browser test's.

A page's blocks run in order in one fresh folder: its bash and console blocks in one shell (a variable set in one
block is seen by the next), each python block in its own interpreter, with this environment's ``bottleneck`` and
``python`` first on PATH. The page names the data it needs, ``<!-- docs-setup: NAME ... -->`` (tests/docs_setup.py);
``<!-- docs-slow: why -->`` makes its run a slow test. A block that cannot run here carries
``<!-- not run: why -->`` on the line right above it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from docs_setup import SETUPS
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUN = {"bash", "sh", "console", "python"}  # the languages a reader runs: each block runs or is marked
OTHER = {"text", "json", "yaml", "toml"}  # output, file contents: shown, never run
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[^`\s]*)\s*$")
NOT_RUN = re.compile(r"^\s*<!-- not run: (?P<why>.+?) -->\s*$")
SETUP = re.compile(r"<!-- docs-setup: (?P<names>[\w ]+?) -->")
SLOW = re.compile(r"<!-- docs-slow: (?P<why>.+?) -->")
SCREENSHOT = ROOT / "docs" / "img" / "inspect.png"


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None  # the reason, when marked

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line} ({self.lang})"


def blocks(page: Path) -> list[Block]:
    """Every fenced block of ``page`` (indented ones too, dedented), with its not-run reason if marked."""
    lines = page.read_text().split("\n")
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, start = len(m["indent"]), i
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        marker = NOT_RUN.match(lines[start - 1]) if start else None
        out.append(
            Block(page, start + 1, m["lang"], "\n".join(body) + "\n", marker["why"] if marker else None)
        )
        i += 1
    return out


def all_blocks() -> list[Block]:
    return [b for page in PAGES for b in blocks(page)]


def runnable_pages() -> list:
    params = []
    for page in PAGES:
        if any(b.lang in RUN and b.not_run is None for b in blocks(page)):
            slow = SLOW.search(page.read_text())
            marks = [pytest.mark.slow] if slow else []
            params.append(pytest.param(page, marks=marks, id=str(page.relative_to(ROOT))))
    return params


def test_every_block_has_a_known_language_and_every_marker_a_block():
    unknown = [str(b) for b in all_blocks() if b.lang not in RUN | OTHER]
    assert unknown == [], f"fenced blocks need a language ({sorted(RUN | OTHER)}): {unknown}"
    dangling = []
    for page in PAGES:
        lines = page.read_text().split("\n")
        for k, line in enumerate(lines):
            if NOT_RUN.match(line) and not (k + 1 < len(lines) and FENCE.match(lines[k + 1])):
                dangling.append(f"{page.relative_to(ROOT)}:{k + 1}")
    assert dangling == [], f"a not-run marker must sit on the line right above its block: {dangling}"


def test_every_code_block_is_run_or_marked_with_a_reason():
    code = [b for b in all_blocks() if b.lang in RUN]
    run_pages = {p.values[0] for p in runnable_pages()}
    run = [b for b in code if b.not_run is None and b.page in run_pages]
    marked = [b for b in code if b.not_run is not None]
    assert len(run) + len(marked) == len(code) > 0
    short = [f"{b}: {b.not_run!r}" for b in marked if len(b.not_run.split()) < 3]
    assert short == [], f"say why a block is not run (what it needs): {short}"
    # The share the issue asks for, stated as the test measures it.
    assert (len(run) + len(marked)) / len(code) == 1.0
    assert len(run) > 2 * len(marked), (len(run), len(marked))


def test_pages_name_known_setups():
    for page in PAGES:
        for m in SETUP.finditer(page.read_text()):
            unknown = set(m["names"].split()) - set(SETUPS)
            assert not unknown, (
                f"{page.relative_to(ROOT)}: no such docs setup {unknown}; known: {sorted(SETUPS)}"
            )


def _command_lines(block: Block):
    """(line, tokens after `bottleneck`) of every `bottleneck ...` command in a shell block."""
    for k, raw in enumerate(block.code.split("\n")):
        line = raw[2:] if block.lang == "console" and raw.startswith("$ ") else raw
        if block.lang == "console" and not raw.startswith("$ "):
            continue
        for segment in re.split(r"\$\(|\|\||&&|\||;|`", line):
            try:
                tokens = shlex.split(segment.rstrip().rstrip(")"), comments=True)
            except ValueError:
                continue
            while tokens and re.match(r"^[A-Z_]+=", tokens[0]):
                tokens = tokens[1:]  # VAR=value before the command
            if tokens and tokens[0] == "bottleneck":
                yield block.line + k + 1, tokens[1:]


def _check_command(tokens: list[str]) -> str | None:
    import typer

    from bottleneck.cli import app

    command, path = typer.main.get_command(app), ["bottleneck"]
    rest = list(tokens)
    # typer ships its own copy of click: a group is what lists commands
    while hasattr(command, "list_commands") and rest and not rest[0].startswith("-"):
        sub = command.get_command(command.context_class(command), rest[0])
        if sub is None:
            return f"`{' '.join(path)}` has no command {rest[0]!r}"
        command, path, rest = sub, [*path, rest[0]], rest[1:]
    known = {o for p in command.params for o in (*p.opts, *getattr(p, "secondary_opts", ()))}
    for token in rest:
        if token.startswith("-") and token not in ("-", "--"):
            name = token.split("=", 1)[0]
            if name not in known:
                return f"`{' '.join(path)}` has no option {name}"
    return None


def test_every_bottleneck_command_in_the_docs_is_real():
    """Run or not, every `bottleneck ...` line names a real command and only options it has."""
    checked, wrong = 0, []
    for block in all_blocks():
        if block.lang not in RUN - {"python"} and block.lang != "text":
            continue
        for line, tokens in _command_lines(block):
            checked += 1
            problem = _check_command(tokens)
            if problem:
                wrong.append(f"{block.page.relative_to(ROOT)}:{line}: {problem}")
    assert wrong == []
    assert checked > 50


def test_the_command_check_catches_wrong_commands_and_options():
    assert _check_command(["extract", "data", "--backbone", "vgg16"]) is None
    assert _check_command(["cache", "export", "c", "--to", "npy"]) is None
    assert "no command 'extrct'" in _check_command(["extrct", "data"])
    assert "no option --no-such" in _check_command(["fit-head", "c", "--no-such=1"])
    assert "no command 'lst'" in _check_command(["cache", "lst"])


def test_block_parsing_reads_markers_and_indented_blocks(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "x\n<!-- not run: needs network (imagenet weights) -->\n```bash\nbottleneck extract a\n```\n"
        "- item\n\n  ```python\n  print(1)\n  ```\n"
    )
    a, b = blocks(page)
    assert (a.lang, a.line, a.code, a.not_run) == (
        "bash",
        3,
        "bottleneck extract a\n",
        "needs network (imagenet weights)",
    )
    assert (b.lang, b.code, b.not_run) == ("python", "print(1)\n", None)


def _script(page: Path) -> str:
    """One bash script running the page's blocks in order; each block announces itself on stderr."""
    parts = ["set -eo pipefail"]
    for b in blocks(page):
        if b.lang not in RUN or b.not_run is not None:
            continue
        parts.append(f"echo '::docs-block {b.line}' >&2")
        if b.lang == "python":
            parts.append(f"python - <<'DOCS_PYTHON_EOF'\n{b.code}DOCS_PYTHON_EOF")
        elif b.lang == "console":
            parts.append("\n".join(line[2:] for line in b.code.split("\n") if line.startswith("$ ")))
        else:
            parts.append(b.code)
    return "\n".join(parts) + "\n"


@pytest.fixture(scope="session")
def docs_cache(tmp_path_factory):
    """One cache folder for every page: a page extracting what another extracted gets a hit (keys are content
    hashes, so sharing is safe)."""
    return tmp_path_factory.mktemp("docs-cache")


@pytest.mark.parametrize("page", runnable_pages())
def test_page_blocks_run(page, tmp_path, docs_cache):
    text = page.read_text()
    (tmp_path / "cache").symlink_to(docs_cache, target_is_directory=True)
    for m in SETUP.finditer(text):
        for name in m["names"].split():
            SETUPS[name](tmp_path)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.update(COLUMNS="120", PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run(
        ["bash", "-c", _script(page)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        started = re.findall(r"::docs-block (\d+)", done.stderr)
        where = f"{page.relative_to(ROOT)}:{started[-1]}" if started else str(page.relative_to(ROOT))
        pytest.fail(
            f"the block at {where} failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )


def test_mkdocs_build_strict(tmp_path):
    """The site builds with no warning (broken links, missing pages, unresolvable API references); the generated
    references hold every command, option and public name."""
    site = tmp_path / "site"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-q",
            "-f",
            str(ROOT / "mkdocs.yml"),
            "-d",
            str(site),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
    )
    assert done.returncode == 0, done.stderr[-5000:]
    assert (site / "search" / "search_index.json").is_file()  # the search box has an index
    import typer

    import bottleneck
    from bottleneck.cli import app

    cli = (site / "reference" / "cli" / "index.html").read_text()
    root = typer.main.get_command(app)
    for name in root.list_commands(root.context_class(root)):
        assert f"bottleneck {name}" in cli, name
        for param in root.get_command(root.context_class(root), name).params:
            for opt in param.opts:
                if opt.startswith("--"):
                    assert opt in cli, (name, opt)
    api = (site / "reference" / "api" / "index.html").read_text()
    for name in bottleneck.__all__:
        assert f"{name}</code>" in api or f">{name}<" in api, name
    for page in ("guides/signs-vgg19", "guides/alexnet-fc7", "how-to/onnx-models", "reference/cache-format"):
        assert (site / page / "index.html").is_file(), page


def test_readme_is_short_and_links_into_the_docs():
    text = (ROOT / "README.md").read_text()
    assert len(text.split("\n")) <= 250
    for target in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / target).is_file() or target in ("docs/reference/cli.md", "docs/reference/api.md"), (
            target
        )


def test_inspect_screenshot_is_the_browser_tests():
    """docs/img/inspect.png is written by tests/test_inspect_browser.py::test_thumbnails_render (with
    BOTTLENECK_DOCS_SCREENSHOT set) after its checks pass: a PNG of the test browser's viewport, tagged by it."""
    import inspect

    import chromium  # scripts/chromium.py: the browser the test drives

    window = inspect.signature(chromium.Browser).parameters
    img = Image.open(SCREENSHOT)
    assert img.format == "PNG"
    # the page's viewport: the window's width, its height less the browser's own bars
    assert (
        img.size[0] == window["width"].default
        and 0.8 * window["height"].default < img.size[1] <= window["height"].default
    )
    assert img.info.get("Source") == "tests/test_inspect_browser.py::test_thumbnails_render"
    assert "inspect.png" in (ROOT / "docs" / "how-to" / "inspect.md").read_text()
