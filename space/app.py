"""The Space's entry point: the package's Gradio app (vlmixer.scripts.app, uploaded beside this file by
`scripts/push_to_hub.py --space`) for the model this Space's card names under `models:` ($VLMIXER_MODEL overrides it)."""

import os
from pathlib import Path

from huggingface_hub import SpaceCard

CARD = Path(__file__).resolve().with_name("README.md")


def model_id() -> str:
    return os.environ.get("VLMIXER_MODEL") or SpaceCard.load(CARD).data.models[0]


if __name__ == "__main__":
    from vlmixer.scripts.app import main

    main(["--model", model_id()])  # Spaces set GRADIO_SERVER_NAME/PORT, which the app listens on
