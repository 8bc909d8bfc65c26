"""The built-in EfficientNet-Lite0 backbone, checked on real photos with its real ImageNet weights."""

import numpy as np
import pytest
import torch

from modeling_vlmixer.efficientnet_lite import EFFICIENTNET_LITE0_FEATURE_DIM, EfficientNetLite0, efficientnet_lite0_pretrained
from processing.processing_vlmixer import efficientnet_image_processor, to_rgb_image


def preprocess_images(images, image_size: int = 224) -> torch.Tensor:
    """The processor's crop preprocessing: (B, 3, image_size, image_size) in [-1, 1]."""
    pixels = efficientnet_image_processor(image_size)(images=[to_rgb_image(i) for i in images], return_tensors="np")
    return torch.from_numpy(pixels["pixel_values"])


skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the real photos (make install has it)")

TABBY, TIGER_CAT, EGYPTIAN_CAT, ESPRESSO = 281, 282, 285, 967


@pytest.fixture(scope="module")
def backbone() -> EfficientNetLite0:
    return efficientnet_lite0_pretrained()


@pytest.fixture(scope="module")
def photo_probabilities(backbone) -> torch.Tensor:
    with torch.no_grad():
        return backbone(preprocess_images([skimage_data.chelsea(), skimage_data.coffee()])).softmax(-1)


def test_real_weights_load_strictly_and_are_frozen(backbone):
    assert sum(p.numel() for p in backbone.parameters()) == 4_652_008
    assert not any(p.requires_grad for p in backbone.parameters())


def test_chelsea_is_a_cat(photo_probabilities):
    assert int(photo_probabilities[0].argmax()) in {TABBY, TIGER_CAT, EGYPTIAN_CAT}
    assert float(photo_probabilities[0, [TABBY, TIGER_CAT, EGYPTIAN_CAT]].sum()) > 0.8


def test_coffee_is_espresso(photo_probabilities):
    assert int(photo_probabilities[1].argmax()) == ESPRESSO
    assert float(photo_probabilities[1, ESPRESSO]) > 0.9


def test_feature_shapes_and_grid_boxes(backbone):
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert backbone.feature_map(pixels).shape == (2, EFFICIENTNET_LITE0_FEATURE_DIM, 7, 7)
        pooled = backbone.pooled_features(pixels)
        cells, boxes = backbone.grid_features(pixels, grid_size=3)
        single_cell, _ = backbone.grid_features(pixels, grid_size=1)
    assert pooled.shape == (2, 1280) and cells.shape == (2, 9, 1280) and boxes.shape == (9, 4)
    torch.testing.assert_close(boxes[0], torch.tensor([0.0, 0.0, 1 / 3, 1 / 3]))
    torch.testing.assert_close(boxes[1], torch.tensor([1 / 3, 0.0, 2 / 3, 1 / 3]))  # row-major: next column first
    torch.testing.assert_close(boxes[-1], torch.tensor([2 / 3, 2 / 3, 1.0, 1.0]))
    torch.testing.assert_close(single_cell[:, 0], pooled)


@pytest.mark.parametrize("height, width", [(225, 225), (113, 97), (32, 32)])
def test_same_padding_gives_ceil_sizes(backbone, height, width):
    with torch.no_grad():
        shape = backbone.feature_map(torch.zeros(1, 3, height, width)).shape
    assert shape[-2:] == (-(-height // 32), -(-width // 32))


def test_backbone_stays_in_eval_mode(backbone):
    backbone.train()
    assert not backbone.training and not backbone._bn0.training


def test_preprocess_accepts_grey_rgba_and_small_images():
    """Fashion-MNIST is 28x28 grey; crops can be RGBA."""
    grey = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    rgba = np.random.default_rng(1).integers(0, 256, (40, 30, 4), dtype=np.uint8)
    pixels = preprocess_images([grey, rgba], image_size=112)
    assert pixels.shape == (2, 3, 112, 112)
    assert float(pixels.min()) >= -1.0 and float(pixels.max()) <= 1.0
    torch.testing.assert_close(pixels[0, 0], pixels[0, 2])  # grey repeated on all channels


def test_preprocess_matches_the_imagenet_recipe():
    white = np.full((300, 400, 3), 255, dtype=np.uint8)
    torch.testing.assert_close(preprocess_images([white]), torch.ones(1, 3, 224, 224))


@pytest.mark.parametrize(
    "image, error, message",
    [
        (np.zeros((0, 5, 3), np.uint8), ValueError, "non-empty"),
        (np.zeros((4, 4, 3, 2), np.uint8), ValueError, "must be"),
        ("not an image", TypeError, "PIL images or numpy arrays"),
    ],
)
def test_preprocess_refuses_bad_images(image, error, message):
    with pytest.raises(error, match=message):
        to_rgb_image(image)
