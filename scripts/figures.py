"""The scripts' common ending: their figures as one JSON line, printed last on stdout and written to --output."""

import json
from pathlib import Path


def report(figures: dict, output: str | None = None) -> dict:
    """Prints `figures` as the last line on stdout (and writes it to `output` when given); returns them."""
    line = json.dumps(figures)
    if output:
        Path(output).write_text(line + "\n")
    print(line)
    return figures
