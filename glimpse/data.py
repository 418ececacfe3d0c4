"""Datasets on disk: finding, downloading, verifying and reading the IDX files of MNIST-like sets.

Where files are looked for, in order:

1. the data directory: ``--data-dir`` on the command line (``data_dir=`` in the API), else the
   ``GLIMPSE_DATA`` environment variable, else ``$XDG_CACHE_HOME/glimpse`` (``~/.cache/glimpse``);
   inside it, both ``<data dir>/<dataset name>/`` and ``<data dir>/`` itself, so pointing
   ``GLIMPSE_DATA`` straight at a folder of MNIST files works;
2. system folders that packages install into (Debian's ``dataset-fashion-mnist`` puts
   Fashion-MNIST in ``/usr/share/datasets/fashion-mnist``).

Each file may be gzip-compressed (``name.gz``) or raw (``name``). Its decompressed content must
have the published sha256; a mismatch is an error, not a warning. Files that are not found are
downloaded from the dataset's mirrors into ``<data dir>/<dataset name>/``, written to a temporary
file, verified, then renamed into place, so an interrupted download never leaves a bad file.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from glimpse.errors import ChecksumError, DataError

DATA_ENV_VAR = "GLIMPSE_DATA"
DOWNLOAD_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class IdxFile:
    """One IDX file of a dataset: its name without ``.gz`` and the sha256 of its content."""

    name: str
    sha256: str


@dataclass(frozen=True)
class IdxDataset:
    """An MNIST-format dataset: four IDX files, where to download them, what its classes are."""

    name: str
    train_images: IdxFile
    train_labels: IdxFile
    test_images: IdxFile
    test_labels: IdxFile
    mirrors: tuple[str, ...]
    class_names: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()
    install_hint: str = ""

    @property
    def files(self) -> tuple[IdxFile, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)


MNIST = IdxDataset(
    name="mnist",
    train_images=IdxFile(
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    train_labels=IdxFile(
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    test_images=IdxFile(
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    test_labels=IdxFile(
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    class_names=tuple(str(d) for d in range(10)),
)

FASHION_MNIST = IdxDataset(
    name="fashion-mnist",
    train_images=IdxFile(
        "train-images-idx3-ubyte",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    train_labels=IdxFile(
        "train-labels-idx1-ubyte",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    test_images=IdxFile(
        "t10k-images-idx3-ubyte",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    test_labels=IdxFile(
        "t10k-labels-idx1-ubyte",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    class_names=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    install_hint="On Debian or Ubuntu, `apt-get install dataset-fashion-mnist` provides it.",
)

DATASETS = {d.name: d for d in (MNIST, FASHION_MNIST)}


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``data_dir``, else ``$GLIMPSE_DATA``, else a per-user cache folder."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get(DATA_ENV_VAR):
        return Path(os.environ[DATA_ENV_VAR]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "glimpse"


def candidate_dirs(dataset: IdxDataset, data_dir: Path) -> list[Path]:
    """Folders searched for the dataset's files, in order."""
    return [data_dir / dataset.name, data_dir, *(Path(d) for d in dataset.system_dirs)]


def find_verified(
    dataset: IdxDataset, file: IdxFile, data_dir: Path
) -> tuple[Path | None, bytes, list[str]]:
    """The first candidate ``name`` or ``name.gz`` whose content verifies, with that content.

    Candidates that fail (another dataset's file of the same name, a truncated download) are
    skipped; what was wrong with each is returned so that a final error can name them.
    """
    problems: list[str] = []
    for folder in candidate_dirs(dataset, data_dir):
        for path in (folder / file.name, folder / f"{file.name}.gz"):
            if not path.is_file():
                continue
            try:
                content = read_bytes(path)
                verify(path, content, file)
            except DataError as error:
                problems.append(str(error))
                continue
            return path, content, problems
    return None, b"", problems


def decompress(raw: bytes, source: object) -> bytes:
    """Gzip content decompressed (raw content as is), or a DataError naming ``source``."""
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(
            f"Cannot decompress {source}: {error}. The file is truncated or corrupted; delete it "
            f"and run again to download a fresh copy (or copy it again from its source)."
        ) from error


def read_bytes(path: Path) -> bytes:
    """The decompressed content of a raw or gzip file."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(
            f"Cannot read {path}: {error}. Check the file and its permissions."
        ) from error
    return decompress(raw, path)


def verify(path: Path, content: bytes, file: IdxFile) -> None:
    digest = hashlib.sha256(content).hexdigest()
    if digest != file.sha256:
        raise ChecksumError(
            f"{path} has the wrong content: its decompressed sha256 is {digest}, expected "
            f"{file.sha256}. It is corrupted or a different file with the same name; delete it "
            f"and run again to download a fresh copy."
        )


def parse_idx(content: bytes, path: Path) -> np.ndarray:
    """The array in an IDX file (only unsigned-byte data, as in MNIST-like sets)."""
    if len(content) < 4 or content[:2] != b"\x00\x00" or content[2] != 0x08:
        raise DataError(
            f"{path} is not an IDX file of unsigned bytes (bad header {content[:4]!r}). Replace "
            f"it with the original dataset file."
        )
    ndim = content[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(content) != expected:
        raise DataError(
            f"{path} holds {len(content)} bytes but its header announces shape {shape} "
            f"({expected} bytes): the file is truncated or corrupted. Delete it and run again "
            f"to download a fresh copy."
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(shape)


def download(
    dataset: IdxDataset,
    file: IdxFile,
    target_dir: Path,
    mirrors: Sequence[str],
    problems: Sequence[str] = (),
) -> bytes:
    """Fetches ``file`` from the first mirror that answers, verified, written atomically.

    Returns the decompressed content. ``problems`` (files found but rejected) go into the
    error raised when no mirror answers.
    """
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"Cannot create {target_dir} to download {dataset.name} into ({error}). Choose a "
            f"writable folder with --data-dir or {DATA_ENV_VAR}."
        ) from error
    target = target_dir / f"{file.name}.gz"
    failures = []
    for mirror in mirrors:
        url = f"{mirror.rstrip('/')}/{file.name}.gz"
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                payload = response.read()
            content = decompress(payload, url)
            verify(target, content, file)
        except (urllib.error.URLError, OSError, DataError) as error:
            failures.append(f"{url} ({error})")
            continue
        with tempfile.NamedTemporaryFile(dir=target_dir, delete=False, suffix=".part") as tmp:
            tmp.write(payload)
        os.replace(tmp.name, target)
        return content
    rejected = f" Files found but rejected: {' '.join(problems)}" if problems else ""
    tried = "; ".join(failures) or "no mirror configured"
    raise DataError(
        f"{dataset.name} file {file.name} is missing and could not be downloaded (tried: "
        f"{tried}). Put the four files ({', '.join(f.name for f in dataset.files)}, gzip or "
        f"raw) in {target_dir} or point --data-dir / {DATA_ENV_VAR} at a folder holding them. "
        f"{dataset.install_hint}{rejected}".strip()
    )


@lru_cache(maxsize=16)
def load_idx_file(
    dataset: IdxDataset, file: IdxFile, data_dir: Path, mirrors: tuple[str, ...]
) -> np.ndarray:
    """The verified array of one file, downloaded if missing (cached per process, read-only)."""
    path, content, problems = find_verified(dataset, file, data_dir)
    if path is None:
        target = data_dir / dataset.name
        content = download(dataset, file, target, mirrors, problems)
        path = target / f"{file.name}.gz"
    array = parse_idx(content, path)
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class LabelledImages:
    """A split of a labelled image set: ``images`` ``(N, C, H, W)`` uint8, ``labels`` ``(N,)``."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> LabelledImages:
        return LabelledImages(self.images[indices], self.labels[indices])


def load_idx_dataset(
    dataset: IdxDataset,
    data_dir: str | os.PathLike[str] | None = None,
    mirrors: Sequence[str] | None = None,
) -> tuple[LabelledImages, LabelledImages]:
    """The verified train and test splits of an MNIST-format dataset (cached per process)."""
    root = resolve_data_dir(data_dir)
    sources = tuple(mirrors) if mirrors is not None else dataset.mirrors
    splits = []
    for images_file, labels_file in (
        (dataset.train_images, dataset.train_labels),
        (dataset.test_images, dataset.test_labels),
    ):
        images = load_idx_file(dataset, images_file, root, sources)
        labels = load_idx_file(dataset, labels_file, root, sources)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"{dataset.name}: {images_file.name} has shape {images.shape} and "
                f"{labels_file.name} has shape {labels.shape}; expected (N, H, W) images and N "
                f"labels. Replace both files with the original ones."
            )
        splits.append(LabelledImages(images[:, None], labels.astype(np.int64)))
    return splits[0], splits[1]


@dataclass(frozen=True)
class DatasetStatus:
    """What ``glimpse data check`` reports for one dataset."""

    name: str
    ok: bool
    detail: str


def check_dataset(
    dataset: IdxDataset, data_dir: str | os.PathLike[str] | None = None
) -> DatasetStatus:
    """Finds and verifies the dataset's files without downloading anything."""
    root = resolve_data_dir(data_dir)
    folders = set()
    for file in dataset.files:
        path, _, problems = find_verified(dataset, file, root)
        if path is None:
            searched = ", ".join(str(d) for d in candidate_dirs(dataset, root))
            detail = f"{file.name} not found (searched {searched})."
            detail = " ".join([detail, *problems, dataset.install_hint]).strip()
            return DatasetStatus(dataset.name, False, detail)
        folders.add(str(path.parent))
    return DatasetStatus(dataset.name, True, f"verified in {', '.join(sorted(folders))}")
