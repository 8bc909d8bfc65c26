"""VLMixer: unpaired vision-language pre-training via cross-modal CutMix, native to Hugging Face transformers.

The repository's folders are installed under this one name, so that no module of a user's (a local `processing.py`)
can shadow them: `vlmixer.modeling_vlmixer` (configuration, models, pipelines), `vlmixer.processing` (processor,
concepts, gallery, collators) and `vlmixer.scripts` (the command-line tools, also installed as `vlmixer-*` commands).
"""

from importlib.metadata import PackageNotFoundError, version


try:
    __version__ = version("vlmixer")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
