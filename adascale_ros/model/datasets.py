"""Labelled image datasets from their standard on-disk formats, held in memory.

Readers (no downloads; nothing is unpickled):

- Fashion-MNIST / MNIST: the gzipped IDX files (``train-images-idx3-ubyte.gz``
  ...), as shipped by Debian's ``dataset-fashion-mnist`` package.
- CIFAR-10 / CIFAR-100: the *binary* distribution (``cifar-10-batches-bin``
  ``data_batch_N.bin``; ``cifar-100-binary`` ``train.bin``). The "python"
  distribution is pickled and is refused, since unpickling runs code.
- ImageFolder trees (``root/<class>/.../*.png|jpg``, e.g. Tiny ImageNet's
  ``train/``), decoded with PIL and resized to a fixed size.

Every reader returns an ``ImageSet``: uint8 images ``(N, C, H, W)`` and int64
labels. Training takes a seeded validation split from the training set; the
test split is only for the final table.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


class DatasetError(ValueError):
    """A dataset is missing, in the wrong format, or inconsistent."""


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,)
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DatasetError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (len(self.images),):
            raise DatasetError(f"{len(self.images)} images but labels of shape {tuple(self.labels.shape)}")
        if len(self.labels) and not (0 <= int(self.labels.min()) and int(self.labels.max()) < len(self.classes)):
            raise DatasetError(f"labels outside 0..{len(self.classes) - 1}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        _, c, h, w = self.images.shape
        return c, h, w

    def pixels(self, count: int | None = None) -> np.ndarray:
        """The first ``count`` images (all by default) as a camera has them: (N, H, W) grey or (N, H, W, 3)
        RGB uint8."""
        images = self.images[:count].numpy()
        return images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ImageSet:
        index = torch.as_tensor(indices, dtype=torch.long)
        return ImageSet(self.images[index], self.labels[index], self.classes)

    def fingerprint(self) -> str:
        """SHA-256 of images and labels: identifies the exact data a model saw."""
        digest = hashlib.sha256()
        digest.update(self.images.numpy().tobytes())
        digest.update(self.labels.numpy().astype("<i8").tobytes())
        return digest.hexdigest()


@dataclass
class DatasetSplits:
    name: str
    train: ImageSet
    val: ImageSet
    test: ImageSet

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for part in (self.train, self.val, self.test):
            digest.update(part.fingerprint().encode())
        return digest.hexdigest()


# ------------------------------------------------------------------ IDX


def _open_maybe_gzip(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic 0x0000 0x08 <ndim>, big-endian dims, uint8 data."""
    try:
        data = _open_maybe_gzip(path)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DatasetError(f"{path}: IDX header says {dims} ({expected} bytes) but holds {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise DatasetError(f"{root}: missing {stem}(.gz)")


def load_idx_split(root: Path, prefix: str, classes: Sequence[str]) -> ImageSet:
    """``prefix`` is ``train`` or ``t10k``, as in the MNIST family's file names."""
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(f"{root}: {prefix} images {images.shape} do not match labels {labels.shape}")
    return ImageSet(
        torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)), tuple(classes)
    )


# ---------------------------------------------------------------- CIFAR


def _read_cifar_bin(path: Path, label_bytes: int, label_offset: int) -> tuple[np.ndarray, np.ndarray]:
    record = label_bytes + 3072
    data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    if len(data) == 0 or len(data) % record:
        raise DatasetError(f"{path}: size {len(data)} is not a multiple of the {record}-byte CIFAR record")
    rows = data.reshape(-1, record)
    return rows[:, label_bytes:].reshape(-1, 3, 32, 32), rows[:, label_offset].astype(np.int64)


def load_cifar(root: Path, split: str) -> ImageSet:
    """CIFAR-10 or CIFAR-100 (fine labels) from the binary distribution under ``root``."""
    root = Path(root)
    if (root / "batches.meta.txt").is_file() or (root / "cifar-10-batches-bin").is_dir():
        base = root / "cifar-10-batches-bin" if (root / "cifar-10-batches-bin").is_dir() else root
        files = [base / f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else [base / "test_batch.bin"]
        label_bytes, label_offset, meta = 1, 0, base / "batches.meta.txt"
        default_classes: Sequence[str] = CIFAR10_CLASSES
    elif (root / "fine_label_names.txt").is_file() or (root / "cifar-100-binary").is_dir():
        base = root / "cifar-100-binary" if (root / "cifar-100-binary").is_dir() else root
        files = [base / ("train.bin" if split == "train" else "test.bin")]
        label_bytes, label_offset, meta = 2, 1, base / "fine_label_names.txt"  # coarse, fine, pixels
        default_classes = [str(i) for i in range(100)]
    elif (root / "cifar-10-batches-py").is_dir() or (root / "cifar-100-python").is_dir():
        raise DatasetError(
            f"{root}: the pickled 'python' CIFAR distribution is not read (unpickling runs code); "
            "use the binary distribution (cifar-10-binary / cifar-100-binary)"
        )
    else:
        raise DatasetError(f"{root}: no CIFAR binary distribution found")
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DatasetError(f"{root}: missing {', '.join(str(m) for m in missing)}")
    parts = [_read_cifar_bin(f, label_bytes, label_offset) for f in files]
    classes = tuple(line.strip() for line in meta.read_text().splitlines() if line.strip()) if meta.is_file() else ()
    return ImageSet(
        torch.from_numpy(np.concatenate([p[0] for p in parts])),
        torch.from_numpy(np.concatenate([p[1] for p in parts])),
        classes or tuple(default_classes),
    )


# ---------------------------------------------------------- ImageFolder


def _decode_image(path: Path, size: int, channels: int) -> np.ndarray:
    """One image file as a (C, size, size) uint8 array; a file PIL cannot decode is an error naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            pixels = img.convert({1: "L", 3: "RGB"}[channels]).resize((size, size), Image.BILINEAR)
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"{path}: cannot decode image: {exc}") from exc
    array = np.asarray(pixels, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _image_set(images: list[np.ndarray], labels: list[int], classes: tuple[str, ...], root: Path) -> ImageSet:
    if not images:
        raise DatasetError(f"{root}: no images")
    return ImageSet(torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64), classes)


def load_image_folder(root: Path, size: int, channels: int = 3) -> ImageSet:
    """An ImageFolder tree: one directory per class (sorted), images anywhere below it.

    Images are decoded with PIL, converted to RGB (or L for ``channels=1``)
    and resized to ``size`` x ``size``. A file PIL cannot decode is an error
    naming the file.
    """
    root = Path(root)
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    if not class_dirs:
        raise DatasetError(f"{root}: no class directories")
    images, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        for path in sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            images.append(_decode_image(path, size, channels))
            labels.append(label)
    return _image_set(images, labels, tuple(d.name for d in class_dirs), root)


UNLABELLED = ("unlabelled",)  # the one class of a set of frames without labels


def load_unlabelled_folder(root: Path, size: int, channels: int = 3, limit: int | None = None) -> ImageSet:
    """Every image below ``root`` (any depth, in path order; the first ``limit``), decoded and resized as an
    ImageFolder's images are, in one class, ``UNLABELLED``: frames for label-free adaptation."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    return _image_set([_decode_image(p, size, channels) for p in paths], [0] * len(paths), UNLABELLED, root)


ANNOTATIONS_FILE = "val_annotations.txt"


def load_annotated_folder(root: Path, classes: tuple[str, ...], size: int, channels: int = 3) -> ImageSet:
    """Tiny ImageNet's validation layout: ``images/<file>`` labelled by ``val_annotations.txt``.

    Each annotation line is ``<file> <TAB> <class> [<TAB> box ...]``; the
    class must be one of ``classes`` (the training tree's), so labels index
    the same classes.
    """
    root = Path(root)
    index = {name: i for i, name in enumerate(classes)}
    images, labels = [], []
    for number, line in enumerate((root / ANNOTATIONS_FILE).read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise DatasetError(
                f"{root / ANNOTATIONS_FILE}:{number}: expected '<file>\\t<a class of train/>', got {line!r}"
            )
        images.append(_decode_image(root / "images" / fields[0], size, channels))
        labels.append(index[fields[1]])
    return _image_set(images, labels, classes, root)


# -------------------------------------------------------------- splits


def split_validation(train: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """Carve a seeded, class-stratified validation split out of the training set."""
    if not 0.0 < fraction < 1.0:
        raise DatasetError(f"validation fraction must be in (0, 1), got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    val_index = []
    for label in range(len(train.classes)):
        members = torch.nonzero(train.labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        val_index.append(members[: round(len(members) * fraction)])
    val = torch.sort(torch.cat(val_index)).values
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[val] = False
    return train.subset(torch.nonzero(keep).flatten()), train.subset(val)


@dataclass(frozen=True)
class DatasetSpec:
    """Which dataset to load and how; from the training configuration."""

    name: str = "fashion-mnist"  # fashion-mnist | mnist-idx | cifar | image-folder
    root: str | None = None  # default: the Debian package's directory for fashion-mnist
    image_size: int | None = None  # image-folder only
    channels: int = 3  # image-folder only
    val_fraction: float = 0.1
    seed: int = 0
    limit_train: int | None = None  # keep only the first N training images (smoke runs)
    limit_test: int | None = None


def load_splits(spec: DatasetSpec) -> DatasetSplits:
    if spec.name == "fashion-mnist" or spec.name == "mnist-idx":
        root = Path(spec.root) if spec.root else FASHION_MNIST_DIR
        classes = FASHION_MNIST_CLASSES if spec.name == "fashion-mnist" else tuple(str(i) for i in range(10))
        if not root.is_dir():
            raise DatasetError(f"{root}: not found (install the Debian package dataset-fashion-mnist: make setup)")
        train, test = load_idx_split(root, "train", classes), load_idx_split(root, "t10k", classes)
    elif spec.name == "cifar":
        if not spec.root:
            raise DatasetError("cifar needs a root directory")
        train, test = load_cifar(Path(spec.root), "train"), load_cifar(Path(spec.root), "test")
    elif spec.name == "image-folder":
        if not spec.root or not spec.image_size:
            raise DatasetError("image-folder needs root (with train/ and test/ or val/) and image_size")
        root = Path(spec.root)
        train = load_image_folder(root / "train", spec.image_size, spec.channels)
        if (root / "val" / ANNOTATIONS_FILE).is_file():  # Tiny ImageNet: its test/ has no labels
            test = load_annotated_folder(root / "val", train.classes, spec.image_size, spec.channels)
        else:
            test_dir = root / "test" if (root / "test").is_dir() else root / "val"
            test = load_image_folder(test_dir, spec.image_size, spec.channels)
            if test.classes != train.classes:
                raise DatasetError(f"{test_dir}: classes differ from {root / 'train'}")
    else:
        raise DatasetError(f"unknown dataset {spec.name!r}; known: fashion-mnist, mnist-idx, cifar, image-folder")
    if spec.limit_train is not None:
        train = train.subset(range(min(spec.limit_train, len(train))))
    if spec.limit_test is not None:
        test = test.subset(range(min(spec.limit_test, len(test))))
    train, val = split_validation(train, spec.val_fraction, spec.seed)
    return DatasetSplits(spec.name, train, val, test)
