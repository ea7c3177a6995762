"""Other distributions of the import package `bottleneck` (the numerical Bottleneck), and pandas' warning about us."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from importlib import metadata

from bottleneck.errors import DISTRIBUTION

# The console script of this project; an installed "bottleneck" distribution with it is ours, before the rename.
OUR_ENTRY_POINT = "bottleneck.cli:main"

# pandas imports any module called `bottleneck` as its optional accelerator (pandas.core.nanops,
# import_optional_dependency("bottleneck", errors="warn")). It finds us, sees a __version__ below its minimum,
# warns with this text and does not use us (falls back to NumPy). The text points at a Bottleneck upgrade, which
# would overwrite our files, so the CLI (which owns its process) leaves it out.
PANDAS_WARNING = r"Pandas requires version '[^']*' or newer of 'bottleneck'"

VENV_FIX = f"python -m venv ~/.venvs/bottleneck && ~/.venvs/bottleneck/bin/pip install {DISTRIBUTION}"


@dataclass(frozen=True)
class Clash:
    """An installed distribution other than ours that also provides the import package `bottleneck`."""

    kind: str  # "numerical": the numerical Bottleneck | "old-name": this project installed as "bottleneck"
    name: str  # the distribution's name as installed ("Bottleneck")
    version: str
    location: str  # the folder that holds its metadata (a site-packages)
    message: str  # one line: what is wrong and the fix


def _is_ours(dist) -> bool:
    return any(ep.group == "console_scripts" and ep.value == OUR_ENTRY_POINT for ep in dist.entry_points)


def _message(kind: str, version: str, location: str) -> str:
    if kind == "numerical":
        return (
            f"the numerical Bottleneck {version} (pandas' and xarray's accelerator, in {location}) is installed "
            f"in this environment and imports as `bottleneck` too, so one package's files replace the other's; "
            f"install {DISTRIBUTION} in a virtual environment of its own: {VENV_FIX}"
        )
    return (
        f"this project is also registered under its old distribution name 'bottleneck' {version} (in "
        f"{location}), which a later install of the numerical Bottleneck (pandas[performance]) would uninstall "
        f"with our files; run `pip uninstall bottleneck`, then reinstall {DISTRIBUTION}"
    )


def find_clashes() -> list[Clash]:
    """Every installed distribution named "bottleneck" (any case or separator): the import name we share.

    Read from distribution metadata on ``sys.path`` only; nothing is imported. Ours is now
    ``bottleneck-features``, so a "bottleneck" distribution is the numerical library, or this project
    installed before its rename (told apart by our console script).
    """
    found, seen = [], set()
    for dist in metadata.distributions(name="bottleneck"):
        name, version = dist.name or "bottleneck", dist.version or "?"
        location = str(dist.locate_file(""))
        if (name.lower(), version, location) in seen:
            continue
        seen.add((name.lower(), version, location))
        kind = "old-name" if _is_ours(dist) else "numerical"
        found.append(Clash(kind, name, version, location, _message(kind, version, location)))
    return found


def ignore_pandas_warning() -> None:
    """Leave pandas' warning about us out for the rest of the process (the CLI's choice, never the library's)."""
    warnings.filterwarnings("ignore", message=PANDAS_WARNING, category=UserWarning)


@contextlib.contextmanager
def pandas_warning_ignored():
    """Leave pandas' warning about us out inside the block only; the warning filters are restored after it."""
    with warnings.catch_warnings():
        ignore_pandas_warning()
        yield
