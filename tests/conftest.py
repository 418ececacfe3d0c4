"""Shared fixtures: the MNIST folder and tiny synthetic IDX datasets."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glimpse.data import IdxDataset, IdxFile

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def pytest_configure(config: pytest.Config) -> None:
    # Tests read MNIST from the shared folder unless the caller points elsewhere. A relative
    # GLIMPSE_DATA (the README's test command gives one) is made absolute here, because many tests
    # change into a scratch folder before they run glimpse.
    data = os.environ.get("GLIMPSE_DATA")
    if data:
        os.environ["GLIMPSE_DATA"] = str(Path(data).resolve())
    elif SHARED_MNIST.is_dir():
        os.environ["GLIMPSE_DATA"] = str(SHARED_MNIST)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def make_tiny_dataset(folder: Path, name: str = "tiny", seed: int = 0) -> IdxDataset:
    """Writes four gzip IDX files (12 train, 4 test images of 28 x 28) and returns their spec."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (12, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 12),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 4),
    }
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for file_name, array in arrays.items():
        content = idx_bytes(array)
        (folder / f"{file_name}.gz").write_bytes(gzip.compress(content))
        files.append(IdxFile(file_name, hashlib.sha256(content).hexdigest()))
    return IdxDataset(
        name=name,
        train_images=files[0],
        train_labels=files[1],
        test_images=files[2],
        test_labels=files[3],
        mirrors=(),
        class_names=tuple(str(i) for i in range(10)),
    )


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny ImageFolder root: 3 classes of 6 random 48 x 40 RGB images."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for label in ("circle", "square", "triangle"):
        (root / label).mkdir()
        for i in range(6):
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return str(root)
