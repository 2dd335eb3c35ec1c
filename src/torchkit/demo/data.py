"""The demo's datasets: scikit-learn's bundled digits, or MNIST-style IDX files.

Both end up as the reference notes prepare FashionMNIST for LeNet: single-channel images
scaled to ``[0, 1]``, resized to 32x32 (``transforms.Resize((32, 32))``) and standardised
with the mean and standard deviation of the *training* images: the notes use
``transforms.Normalize((0.2860,), (0.3530,))``, "calculated on training data" of FashionMNIST;
here the statistics are computed from whichever training split is loaded, at its native
resolution, before resizing.

* :func:`load_digits_32` - the 1,797 8x8 handwritten digits that ship inside scikit-learn
  (``sklearn.datasets.load_digits``: real scans from UCI, no download), bilinearly upsampled.
* :func:`load_idx_dataset` - the four IDX files of MNIST, FashionMNIST or KMNIST as torchvision
  stores them (``<root>/<Name>/raw/train-images-idx3-ubyte``, optionally ``.gz``), read by
  :func:`read_idx`; torchvision is not needed.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "IDX_FILES",
    "DemoData",
    "Split",
    "find_idx_files",
    "load_digits_32",
    "load_idx_dataset",
    "read_idx",
]

IMAGE_SIZE = 32
NUM_CLASSES = 10

# The four files of an MNIST-style dataset, by role, under the names torchvision gives them.
IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# IDX type byte -> element type; multi-byte types are big-endian in the file.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Split:
    """One split of a dataset, ready for LeNet.

    Attributes:
        images: ``(N, 1, 32, 32)`` float32, standardised.
        labels: ``(N,)`` int64 class indices in ``[0, 10)``.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> Split:
        """This split with both tensors moved to ``device``."""
        return Split(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class DemoData:
    """A train/test pair and where it came from.

    Attributes:
        name: short dataset name for titles (``"sklearn digits"``, ``"FashionMNIST"``, ...).
        source: one sentence on the origin and preparation, for the summary.
        train: the training split.
        test: the held-out split, used for the reported test loss and accuracy.
        mean: the training images' mean at native resolution, in ``[0, 1]`` units.
        std: the training images' standard deviation at native resolution.
    """

    name: str
    source: str
    train: Split
    test: Split
    mean: float
    std: float


def _standardise(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Resize ``(N, H, W)`` images in ``[0, 1]`` to ``(N, 1, 32, 32)`` and standardise them."""
    x = images.to(torch.float32).unsqueeze(1)
    if x.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
        x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return ((x - mean) / std).contiguous()


def _prepare(
    name: str,
    source: str,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
) -> DemoData:
    """Standardise both splits with the training split's statistics."""
    std64, mean64 = torch.std_mean(train_images.to(torch.float64))
    mean, std = float(mean64), float(std64)
    if not math.isfinite(std) or std == 0.0:
        raise ValueError(f"{name}: the training images are constant (std={std}); cannot normalise")
    return DemoData(
        name=name,
        source=source,
        train=Split(_standardise(train_images, mean, std), train_labels.to(torch.int64)),
        test=Split(_standardise(test_images, mean, std), test_labels.to(torch.int64)),
        mean=mean,
        std=std,
    )


def load_digits_32(test_fraction: float = 0.2) -> DemoData:
    """scikit-learn's bundled 8x8 digits, upsampled to 32x32 and split into train and test.

    The split is stratified by class and fixed (it does not depend on the demo's ``--seed``),
    so runs with different seeds are evaluated on the same held-out images.

    Args:
        test_fraction: share of the 1,797 images held out for testing, in ``(0, 1)``;
            default 0.2 (1,437 train, 360 test).

    Raises:
        ValueError: ``test_fraction`` is outside ``(0, 1)``.
        ModuleNotFoundError: scikit-learn is not installed (``pip install 'torchkit[demo]'``).

    Example:
        >>> data = load_digits_32()  # doctest: +SKIP
        >>> data.train.images.shape, len(data.test)  # doctest: +SKIP
        (torch.Size([1437, 1, 32, 32]), 360)
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "the demo's default dataset needs scikit-learn: pip install 'torchkit[demo]'"
        ) from err

    digits = load_digits()
    images = np.asarray(digits.images, dtype=np.float64) / 16.0  # pixel values are 0..16
    labels = np.asarray(digits.target, dtype=np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=0
    )
    return _prepare(
        "sklearn digits",
        "scikit-learn's bundled UCI handwritten digits (8x8, 0..16), scaled to [0, 1] and "
        f"upsampled to {IMAGE_SIZE}x{IMAGE_SIZE}; fixed stratified {1 - test_fraction:.0%}/"
        f"{test_fraction:.0%} train/test split",
        torch.from_numpy(train_x),
        torch.from_numpy(train_y),
        torch.from_numpy(test_x),
        torch.from_numpy(test_y),
    )


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzip-compressed or not.

    Compression is recognised from the file's first bytes, not its name. The result has the
    dimensions stored in the header and native byte order.

    Args:
        path: the file.

    Raises:
        ValueError: the file is not IDX (bad magic number or type code), or its payload does
            not match the sizes in its header.

    Example:
        >>> images = read_idx("data/FashionMNIST/raw/train-images-idx3-ubyte")  # doctest: +SKIP
        >>> images.shape, images.dtype  # doctest: +SKIP
        ((60000, 28, 28), dtype('uint8'))
    """
    path = Path(path)
    with path.open("rb") as handle:
        raw = handle.read()
    if raw[:2] == _GZIP_MAGIC:
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise ValueError(f"{path}: not an IDX file (magic bytes {raw[:4].hex() or 'missing'})")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        valid = ", ".join(f"0x{code:02X}" for code in _IDX_DTYPES)
        raise ValueError(
            f"{path}: unknown IDX type code 0x{type_code:02X}; expected one of {valid}"
        )
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise ValueError(f"{path}: truncated IDX header ({ndim} dimensions announced)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize
    payload = len(raw) - header_end
    if payload != expected:
        raise ValueError(
            f"{path}: IDX header announces shape {shape} ({expected} bytes of data), "
            f"but the file holds {payload}"
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header_end).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def _complete_set(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (plain before ``.gz``), or None if one is missing."""
    found: dict[str, Path] = {}
    for role, stem in IDX_FILES.items():
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                found[role] = candidate
                break
        else:
            return None
    return found


def find_idx_files(root: str | Path) -> dict[str, Path]:
    """Locate the four MNIST-style IDX files under ``root``.

    Looks in ``root`` itself, ``root/raw`` and ``root/<Name>/raw`` (torchvision's layout, e.g.
    ``data/FashionMNIST/raw``); each file may be plain or ``.gz``.

    Args:
        root: a folder.

    Returns:
        ``{"train_images": path, "train_labels": path, "test_images": path, "test_labels": path}``.

    Raises:
        FileNotFoundError: ``root`` is not a folder, or no folder holds all four files.
        ValueError: several folders under ``root`` hold a complete set (say which one to use).

    Example:
        >>> find_idx_files("data")["train_images"]  # doctest: +SKIP
        PosixPath('data/FashionMNIST/raw/train-images-idx3-ubyte')
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--data {str(root)!r} is not a folder")
    candidates = [root, root / "raw", *sorted(root.glob("*/raw"))]
    sets = [(folder, files) for folder in candidates if (files := _complete_set(folder))]
    if not sets:
        names = ", ".join(f"{stem}[.gz]" for stem in IDX_FILES.values())
        raise FileNotFoundError(
            f"no MNIST-style IDX files under {str(root)!r}: looked in it, in raw/ and in */raw/ "
            f"for {names}"
        )
    if len(sets) > 1:
        folders = ", ".join(repr(str(folder)) for folder, _ in sets)
        raise ValueError(
            f"several IDX datasets under {str(root)!r} ({folders}); pass one of them as --data"
        )
    return sets[0][1]


def _dataset_name(train_images: Path) -> str:
    folder = train_images.parent
    if folder.name == "raw" and folder.parent.name:
        return folder.parent.name
    return folder.name or "IDX"


def _images_and_labels(files: dict[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(files[f"{split}_images"])
    labels = read_idx(files[f"{split}_labels"])
    if images.ndim != 3:
        raise ValueError(
            f"{files[f'{split}_images']}: expected (N, H, W) images, got shape {images.shape}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{files[f'{split}_labels']}: expected {images.shape[0]} labels to match the images, "
            f"got shape {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(
            f"{files[f'{split}_labels']}: LeNet here has {NUM_CLASSES} classes, but labels span "
            f"{labels.min()}..{labels.max()}"
        )
    return images, labels


def load_idx_dataset(root: str | Path) -> DemoData:
    """MNIST-style IDX files under ``root``, prepared like the notes prepare FashionMNIST.

    Pixels are divided by 255, resized to 32x32 and standardised with the training images' mean
    and standard deviation, the statistics behind the notes' FashionMNIST constants
    ``Normalize((0.2860,), (0.3530,))``.

    Args:
        root: a folder as accepted by :func:`find_idx_files`.

    Raises:
        FileNotFoundError, ValueError: see :func:`find_idx_files` and :func:`read_idx`; also
            labels outside ``[0, 10)`` or image and label counts that disagree.

    Example:
        >>> data = load_idx_dataset("data")  # doctest: +SKIP
        >>> data.name, len(data.train), len(data.test)  # doctest: +SKIP
        ('FashionMNIST', 60000, 10000)
    """
    files = find_idx_files(root)
    train_x, train_y = _images_and_labels(files, "train")
    test_x, test_y = _images_and_labels(files, "test")
    scale = 255.0 if train_x.dtype == np.uint8 else 1.0
    name = _dataset_name(files["train_images"])
    height, width = train_x.shape[1:]
    return _prepare(
        name,
        f"IDX files in {files['train_images'].parent} ({height}x{width}), scaled to [0, 1] and "
        f"resized to {IMAGE_SIZE}x{IMAGE_SIZE}; the files' own train/test split",
        torch.from_numpy(train_x.astype(np.float32) / scale),
        torch.from_numpy(train_y.astype(np.int64)),
        torch.from_numpy(test_x.astype(np.float32) / scale),
        torch.from_numpy(test_y.astype(np.int64)),
    )
