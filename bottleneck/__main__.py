"""`python -m bottleneck ...` runs the CLI, e.g. where the console script is not on PATH."""

from bottleneck.cli import main

main()
