"""The scripts' common ending: their figures as one JSON line, printed last on stdout and written to --output."""

import json

from vlmixer.scripts.atomic import atomic_write_text


def report(figures: dict, output: str | None = None) -> dict:
    """Prints `figures` as the last line on stdout (and writes it to `output`, whole or not at all, when given);
    returns them."""
    line = json.dumps(figures)
    if output:
        atomic_write_text(output, line + "\n")
    print(line)
    return figures
