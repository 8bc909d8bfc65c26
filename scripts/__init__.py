"""The command-line tools, one module each; `pip install` makes them `vlmixer-*` commands (see pyproject.toml)."""
