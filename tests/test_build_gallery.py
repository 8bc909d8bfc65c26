"""scripts/build_gallery.py on real Fashion-MNIST images and on an image folder with corrupt files."""

import json
from pathlib import Path

import numpy as np
import pytest

from vlmixer.processing import PatchGallery
from vlmixer.processing.sources import FASHION_MNIST_DIR, load_fashion_mnist, read_idx

from vlmixer.scripts import build_gallery  # noqa: E402


needs_fashion_mnist = pytest.mark.skipif(
    not Path(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist; make install does it)",
)


@needs_fashion_mnist
def test_fashion_mnist_gallery_is_class_balanced_and_real(tmp_path):
    summary = build_gallery.main(
        ["--fashion_mnist", FASHION_MNIST_DIR, "--per_class", "3", "--image_size", "64", "--thumbnail_size", "28",
         "--output_dir", str(tmp_path / "gallery"), "--output", str(tmp_path / "summary.json")]
    )  # fmt: skip
    assert summary["rows"] == 30 and summary["skipped"] == {}
    gallery = PatchGallery.load(tmp_path / "gallery", expected_backbone="efficientnet-lite0", expected_feature_dim=1280)
    assert gallery.counts == {name: 3 for name in gallery.concepts} and len(gallery.concepts) == 10
    images, labels = load_fashion_mnist("train")
    first_bag = gallery.concept_offsets[gallery.concepts.index("bag")]
    np.testing.assert_array_equal(gallery.thumbnails[first_bag][..., 0], images[gallery.image_ids[first_bag]])
    assert labels[gallery.image_ids[first_bag]] == 8
    assert json.loads((tmp_path / "summary.json").read_text())["rows"] == 30
    assert np.isfinite(np.asarray(gallery.features, dtype=np.float32)).all() and float(np.abs(gallery.features).max()) > 0


def test_coco_folder_with_corrupt_grey_and_rgba_images(tmp_path):
    from PIL import Image

    images_dir = tmp_path / "images"
    images_dir.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(images_dir / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (60, 80), dtype=np.uint8)).save(images_dir / "grey.png")
    Image.fromarray(rng.integers(0, 256, (60, 80, 4), dtype=np.uint8)).save(images_dir / "rgba.png")
    (images_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(images_dir / "tiny.png")
    names = ["rgb.png", "grey.png", "rgba.png", "broken.jpg", "tiny.png"]
    annotations = {
        "images": [{"id": i, "file_name": name, "width": 80, "height": 60} for i, name in enumerate(names)],
        "annotations": [
            {"id": i, "image_id": i, "category_id": 18 if i % 2 else 17, "bbox": [10, 5, 40, 30]} for i in range(len(names))
        ] + [{"id": 99, "image_id": 0, "category_id": 99, "bbox": [0, 0, 80, 60]}],
        "categories": [{"id": 17, "name": "cat"}, {"id": 18, "name": "dogs"}, {"id": 99, "name": "spaceship"}],
    }  # fmt: skip
    (tmp_path / "annotations.json").write_text(json.dumps(annotations))
    summary = build_gallery.main(
        ["--coco_annotations", str(tmp_path / "annotations.json"), "--image_dir", str(images_dir),
         "--vocabulary", "coco80", "--image_size", "32", "--output_dir", str(tmp_path / "gallery")]
    )  # fmt: skip
    assert summary["images"] == 3
    assert summary["skipped"] == {"corrupt": 1, "tiny": 1, "untagged or low-score regions": 1}
    assert summary["counts"] == {"cat": 2, "dog": 1}  # "dogs" maps to the COCO label, "spaceship" is no concept
    gallery = PatchGallery.load(tmp_path / "gallery")
    np.testing.assert_allclose(gallery.boxes_at(np.array([0]))[0], [10 / 80, 5 / 60, 50 / 80, 35 / 60], rtol=1e-6)


def test_no_usable_image_writes_nothing(tmp_path):
    (tmp_path / "annotations.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(SystemExit, match="No usable image"):
        build_gallery.main(["--coco_annotations", str(tmp_path / "annotations.json"), "--image_dir", str(tmp_path),
                            "--output_dir", str(tmp_path / "gallery")])  # fmt: skip
    assert not (tmp_path / "gallery").exists()


def test_idx_reader_refuses_wrong_and_truncated_files(tmp_path):
    wrong = tmp_path / "wrong.idx"
    wrong.write_bytes((1234).to_bytes(4, "big") + bytes(12))
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(wrong, 2051)
    truncated = tmp_path / "truncated.idx"
    truncated.write_bytes((2049).to_bytes(4, "big") + (10).to_bytes(4, "big") + bytes(5))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(truncated, 2049)
