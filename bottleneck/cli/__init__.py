"""Command-line interface: parse, call one library function, print. The only place that imports typer.

Each command is a module-level function in the module named after it, registered on ``root.app`` with its
options derived from the settings' declarations (``options.command``); importing the modules registers them, in
the order ``--help`` lists them.
"""

from __future__ import annotations

from bottleneck.clash import pandas_warning_ignored

# pandas (imported by scikit-learn) warns that "bottleneck" is too old to be its accelerator: it found us, and falls
# back to NumPy as it should. The command modules keep scikit-learn out of start-up (lazy packages), but should one
# of their imports bring pandas in, its warning is not the user's problem to read about.
with pandas_warning_ignored():
    # isort: off
    from bottleneck.cli import extract, info, backbones, doctor, classify  # noqa: F401
    from bottleneck.cli import fit, compare, predict, fine_tune, export, advise, inspect, similar  # noqa: F401
    from bottleneck.cli import cache, datasets  # noqa: F401

    # isort: on
    from bottleneck.cli.root import app, main

__all__ = ["app", "main"]
