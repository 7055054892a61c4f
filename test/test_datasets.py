"""Each dataset reader on small datasets written here in the real on-disk format."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adascale_ros.model.datasets import (
    FASHION_MNIST_DIR,
    DatasetError,
    DatasetSpec,
    ImageSet,
    load_cifar,
    load_image_folder,
    load_splits,
    read_idx,
    split_validation,
)

RNG = np.random.default_rng(0)


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def make_idx_dataset(root: Path, n_train: int = 60, n_test: int = 20) -> tuple[np.ndarray, np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    images = RNG.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    labels = (np.arange(n_train) % 10).astype(np.uint8)
    write_idx(root / "train-images-idx3-ubyte.gz", images)
    write_idx(root / "train-labels-idx1-ubyte.gz", labels)
    write_idx(root / "t10k-images-idx3-ubyte", RNG.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), compress=False)
    write_idx(root / "t10k-labels-idx1-ubyte", (np.arange(n_test) % 10).astype(np.uint8), compress=False)
    return images, labels


def test_idx_reader_and_splits(tmp_path):
    make_idx_dataset(tmp_path)
    splits = load_splits(DatasetSpec(name="fashion-mnist", root=str(tmp_path), val_fraction=0.2))
    # 6 images per class, 20 % of each class held out: round(1.2) = 1 per class.
    assert len(splits.train) == 50 and len(splits.val) == 10 and len(splits.test) == 20
    assert splits.train.shape == (1, 28, 28) and splits.train.images.dtype == torch.uint8
    assert torch.bincount(splits.val.labels, minlength=10).tolist() == [1] * 10
    # The two parts are disjoint and together are the training file.
    together = torch.cat([splits.train.images, splits.val.images]).flatten(1)
    assert len({bytes(row.numpy()) for row in together}) == 60
    assert splits.train.images[0].squeeze(0).shape == (28, 28)
    # As a camera has them: grey images lose the channel axis, RGB ones put it last.
    assert splits.test.pixels(3).shape == (3, 28, 28) and splits.test.pixels().shape == (20, 28, 28)
    assert (splits.test.pixels(1)[0] == splits.test.images[0, 0].numpy()).all()
    grey = splits.test.images[:2]
    rgb = ImageSet(torch.cat([grey, 255 - grey, grey // 2], dim=1), splits.test.labels[:2], splits.test.classes)
    assert rgb.pixels().shape == (2, 28, 28, 3)
    assert all((rgb.pixels()[1, :, :, c] == rgb.images[1, c].numpy()).all() for c in range(3))
    assert splits.fingerprint() == load_splits(DatasetSpec(root=str(tmp_path), val_fraction=0.2)).fingerprint()
    assert splits.fingerprint() != load_splits(DatasetSpec(root=str(tmp_path), val_fraction=0.2, seed=1)).fingerprint()


def test_idx_reader_rejects_corrupt_files(tmp_path):
    write_idx(tmp_path / "bad", np.zeros((4, 2, 2), dtype=np.uint8), compress=False)
    (tmp_path / "bad").write_bytes((tmp_path / "bad").read_bytes()[:-3])
    with pytest.raises(DatasetError, match="IDX header says"):
        read_idx(tmp_path / "bad")
    (tmp_path / "notidx").write_bytes(b"GIF89a....")
    with pytest.raises(DatasetError, match="not an unsigned-byte IDX"):
        read_idx(tmp_path / "notidx")
    (tmp_path / "trunc.gz").write_bytes(gzip.compress(b"\0\0\x08\x01" + b"\0" * 40)[:-8])
    with pytest.raises(DatasetError):
        read_idx(tmp_path / "trunc.gz")


def cifar_records(n: int, label_bytes: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    labels = RNG.integers(0, 10 if label_bytes == 1 else 100, n)
    pixels = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
    rows = []
    for label, px in zip(labels, pixels, strict=True):
        head = bytes([label]) if label_bytes == 1 else bytes([label // 5, label])  # coarse, fine
        rows.append(head + px.tobytes())
    return b"".join(rows), labels, pixels


def test_cifar10_binary(tmp_path):
    base = tmp_path / "cifar-10-batches-bin"
    base.mkdir()
    all_labels = []
    for i in range(1, 6):
        data, labels, _ = cifar_records(4, 1)
        (base / f"data_batch_{i}.bin").write_bytes(data)
        all_labels.extend(labels)
    data, _, pixels = cifar_records(3, 1)
    (base / "test_batch.bin").write_bytes(data)
    (base / "batches.meta.txt").write_text(
        "\n".join(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]) + "\n\n"
    )
    train, test = load_cifar(tmp_path, "train"), load_cifar(tmp_path, "test")
    assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (3, 3, 32, 32)
    assert train.labels.tolist() == all_labels
    assert torch.equal(test.images[0], torch.from_numpy(pixels[0].reshape(3, 32, 32)))
    assert train.classes[0] == "airplane" and len(train.classes) == 10


def test_cifar100_binary_uses_fine_labels(tmp_path):
    base = tmp_path / "cifar-100-binary"
    base.mkdir()
    data, labels, _ = cifar_records(6, 2)
    (base / "train.bin").write_bytes(data)
    (base / "test.bin").write_bytes(data)
    (base / "fine_label_names.txt").write_text("\n".join(f"class{i}" for i in range(100)))
    splits = load_splits(DatasetSpec(name="cifar", root=str(tmp_path), val_fraction=0.5))
    assert sorted(torch.cat([splits.train.labels, splits.val.labels]).tolist()) == sorted(labels.tolist())
    assert len(splits.classes) == 100


def test_cifar_python_pickles_are_refused_without_being_opened(tmp_path):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):  # would create the marker if unpickled
            return (Path.touch, (marker,))

    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(DatasetError, match="pickled"):
        load_cifar(tmp_path, "train")
    assert not marker.exists()


def test_cifar_truncated_record_is_an_error(tmp_path):
    base = tmp_path / "cifar-10-batches-bin"
    base.mkdir()
    for i in range(1, 6):
        (base / f"data_batch_{i}.bin").write_bytes(cifar_records(2, 1)[0][:-1])
    with pytest.raises(DatasetError, match="multiple of the 3073-byte"):
        load_cifar(tmp_path, "train")


def make_image_folder(root: Path, classes: list[str], per_class: int, size: int = 20) -> None:
    for c, name in enumerate(classes):
        nested = root / name / "images"  # Tiny ImageNet nests images one level down
        nested.mkdir(parents=True)
        for i in range(per_class):
            color = (40 * c, 255 - 40 * c, 10 * i)
            Image.new("RGB", (size + i, size), color).save(nested / f"{name}_{i}.{'png' if i % 2 else 'jpg'}")


def test_image_folder_tree(tmp_path):
    make_image_folder(tmp_path / "train", ["n01", "n02", "n03"], per_class=4)
    make_image_folder(tmp_path / "val", ["n01", "n02", "n03"], per_class=2)
    splits = load_splits(DatasetSpec(name="image-folder", root=str(tmp_path), image_size=16, val_fraction=0.25))
    assert splits.classes == ("n01", "n02", "n03")
    assert splits.train.shape == (3, 16, 16)
    assert len(splits.train) + len(splits.val) == 12 and len(splits.test) == 6
    # Colour survives decoding: class 0 is red-less, class 2 is red.
    red = splits.test.images[:, 0].float().mean(dim=(1, 2))
    assert red[splits.test.labels == 0].mean() < red[splits.test.labels == 2].mean()
    grey = load_image_folder(tmp_path / "val", 8, channels=1)
    assert grey.shape == (1, 8, 8)


def make_tiny_imagenet_val(root: Path, labels: list[str], size: int = 20) -> None:
    """Tiny ImageNet's val/: images/val_<i>.JPEG and val_annotations.txt (file, class, box)."""
    (root / "images").mkdir(parents=True)
    lines = []
    for i, name in enumerate(labels):
        c = int(name[1:]) - 1
        Image.new("RGB", (size, size), (40 * c, 255 - 40 * c, 10 * i)).save(root / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{name}\t0\t0\t{size - 1}\t{size - 1}")
    (root / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def test_tiny_imagenet_layout_labels_val_from_its_annotations(tmp_path):
    make_image_folder(tmp_path / "train", ["n01", "n02", "n03"], per_class=4)
    make_tiny_imagenet_val(tmp_path / "val", ["n03", "n01", "n03", "n02"])
    (tmp_path / "test" / "images").mkdir(parents=True)  # unlabelled, as shipped: must not be used
    Image.new("RGB", (20, 20)).save(tmp_path / "test" / "images" / "test_0.JPEG")
    splits = load_splits(DatasetSpec(name="image-folder", root=str(tmp_path), image_size=16, val_fraction=0.25))
    assert splits.classes == ("n01", "n02", "n03")
    assert splits.test.labels.tolist() == [2, 0, 2, 1]
    red = splits.test.images[:, 0].float().mean(dim=(1, 2))
    assert red[0] > red[3] > red[1]  # the colour of the class each annotation names


def test_tiny_imagenet_annotation_of_an_unknown_class_names_the_line(tmp_path):
    make_image_folder(tmp_path / "train", ["n01", "n02"], per_class=2)
    make_tiny_imagenet_val(tmp_path / "val", ["n01", "n09"])
    with pytest.raises(DatasetError, match=r"val_annotations\.txt:2"):
        load_splits(DatasetSpec(name="image-folder", root=str(tmp_path), image_size=16, val_fraction=0.5))


def test_image_folder_with_an_undecodable_file_names_it(tmp_path):
    make_image_folder(tmp_path / "train", ["a", "b"], per_class=1)
    (tmp_path / "train" / "a" / "images" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match=r"broken\.png"):
        load_image_folder(tmp_path / "train", 8)


def test_validation_split_is_stratified_and_seeded():
    from adascale_ros.model.datasets import ImageSet

    data = ImageSet(torch.zeros(100, 1, 2, 2, dtype=torch.uint8), torch.arange(100) % 4, ("a", "b", "c", "d"))
    train, val = split_validation(data, 0.2, seed=3)
    assert torch.bincount(val.labels).tolist() == [5, 5, 5, 5]
    assert len(train) == 80
    with pytest.raises(DatasetError):
        split_validation(data, 1.0, seed=0)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_the_real_fashion_mnist_package():
    splits = load_splits(DatasetSpec())
    assert (len(splits.train), len(splits.val), len(splits.test)) == (54000, 6000, 10000)
    assert torch.bincount(splits.test.labels).tolist() == [1000] * 10


def test_unknown_dataset_and_missing_directory_are_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_splits(DatasetSpec(name="imagenet"))
    with pytest.raises(DatasetError, match="not found"):
        load_splits(DatasetSpec(root=str(tmp_path / "nope")))
