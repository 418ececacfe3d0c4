"""Datasets on disk: finding, downloading, verifying and reading the IDX files of MNIST-like sets.

Where files are looked for, in order:

1. the data directory: ``--data-dir`` on the command line (``data_dir=`` in the API), else the
   ``GLIMPSE_DATA`` environment variable, else ``$XDG_CACHE_HOME/glimpse`` (``~/.cache/glimpse``);
   inside it, both ``<data dir>/<dataset name>/`` and ``<data dir>/`` itself, so pointing
   ``GLIMPSE_DATA`` straight at a folder of MNIST files works;
2. system folders that packages install into (Debian's ``dataset-fashion-mnist`` puts
   Fashion-MNIST in ``/usr/share/datasets/fashion-mnist``).

Each file may be gzip-compressed (``name.gz``) or raw (``name``). Its decompressed content must
have the published sha256; a file that does not is skipped, and named in the error if the lookup
fails. MNIST and Fashion-MNIST share file names, so a file with the sha256 of another known file
(:data:`KNOWN_FILES`) is reported as that file, never as corrupted. Files that are not found are
downloaded from the dataset's mirrors, verified, written to a temporary file and renamed into
``<data dir>/<dataset name>/``, so an interrupted download never leaves a bad file. Nothing is
created in the data directory before a download succeeds: a failed lookup, or ``glimpse data
check``, leaves it as it was.

Error messages lead with the cause (which file, what is wrong with it), then the fix, as one
plain paragraph that the command line wraps.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.parse
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
    title: str = ""
    """The name messages use ("Fashion-MNIST"); ``name`` is the folder name and the task's."""

    @property
    def files(self) -> tuple[IdxFile, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)

    @property
    def display_name(self) -> str:
        """``title``, else ``name`` (datasets made for tests have no title)."""
        return self.title or self.name


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
    title="MNIST",
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
    title="Fashion-MNIST",
)

DATASETS = {d.name: d for d in (MNIST, FASHION_MNIST)}

# Every published file by the sha256 of its content. MNIST and Fashion-MNIST share file names, so
# a file that is not the one looked for is often the other dataset's; naming it as such (instead
# of calling it corrupted) keeps a user from deleting a good file.
KNOWN_FILES: dict[str, tuple[IdxDataset, IdxFile]] = {
    file.sha256: (dataset, file) for dataset in DATASETS.values() for file in dataset.files
}

# What gzip raises on a truncated or damaged stream.
GZIP_ERRORS = (OSError, EOFError, zlib.error)


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


@dataclass(frozen=True)
class Content:
    """What the bytes of a file (or a download) turned out to hold."""

    data: bytes
    """The decompressed content (raw content as is); empty if it could not be decompressed."""
    gzip_error: str
    """Why gzip could not decompress it, else empty."""
    digest: str
    """The sha256 of ``data``; empty if it could not be decompressed."""

    @property
    def known_as(self) -> tuple[IdxDataset, IdxFile] | None:
        """The published file it is, if it is one."""
        return KNOWN_FILES.get(self.digest)


def inspect_bytes(raw: bytes) -> Content:
    """Decompresses ``raw`` if it is gzip data and hashes the content."""
    data = raw
    if raw[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(raw)
        except GZIP_ERRORS as error:
            return Content(b"", str(error), "")
    return Content(data, "", hashlib.sha256(data).hexdigest())


@dataclass(frozen=True)
class Rejection:
    """A file found where a dataset file was looked for that is not that file."""

    cause: str
    """One sentence that leads with what is wrong with the file."""
    fix: str
    """One sentence saying what to do about it."""
    checksum: bool
    """True when the file decompressed fine but holds other content (see ChecksumError)."""


def reject(
    path: Path, content: Content, dataset: IdxDataset, file: IdxFile, data_dir: Path
) -> Rejection:
    """Why ``path``, with ``content``, is not ``dataset``'s ``file``, and what to do about it."""
    title = dataset.display_name
    where = f"{path.name} in {path.parent}"
    if content.gzip_error:
        return Rejection(
            f"{title}'s {where} is corrupted (gzip: {content.gzip_error}).",
            "Copy a good file over it, or delete it and run again to download a fresh copy.",
            checksum=False,
        )
    known = content.known_as
    if known is None:
        return Rejection(
            f"{title}'s {where} is not the published file (sha256 {content.digest[:12]}..., "
            f"published {file.sha256[:12]}...): it is corrupted, or another dataset's file of "
            f"the same name.",
            "Replace it with the original file, or move it away and run again to download a "
            "fresh copy.",
            checksum=True,
        )
    # A good file of a known dataset: say which, and never suggest deleting it.
    other, other_file = known
    wanted = f"{title}'s" if other_file.name == file.name else f"{title}'s {file.name}"
    cause = f"The {where} is {other.display_name}'s {other_file.name}, not {wanted}."
    home = data_dir / dataset.name
    if other.name == dataset.name:
        fix = f"Put {title}'s {file.name} in {home}."
    elif path.parent == home:
        fix = (
            f"Put {title}'s files in {home} instead ({other.display_name}'s belong in "
            f"{data_dir / other.name})."
        )
    elif path.parent == data_dir:
        fix = (
            f"Point --data-dir / {DATA_ENV_VAR} at a folder that holds {other.name}/ and "
            f"{dataset.name}/ subfolders, each with its dataset's files, or put {title}'s files "
            f"in {home}."
        )
    else:
        fix = f"Put {title}'s files in {home}."
    return Rejection(cause, fix, checksum=True)


def find_verified(
    dataset: IdxDataset, file: IdxFile, data_dir: Path
) -> tuple[Path | None, bytes, list[Rejection]]:
    """The first candidate ``name`` or ``name.gz`` whose content verifies, with that content.

    Candidates that fail (another dataset's file of the same name, a truncated download) are
    skipped; what was wrong with each is returned so that a final error can name them.
    """
    rejected: list[Rejection] = []
    for folder in candidate_dirs(dataset, data_dir):
        for path in (folder / file.name, folder / f"{file.name}.gz"):
            if not path.is_file():
                continue
            try:
                raw = path.read_bytes()
            except OSError as error:
                rejected.append(
                    Rejection(
                        f"Cannot read {path} ({error.strerror or error}).",
                        "Check the file and its permissions.",
                        checksum=False,
                    )
                )
                continue
            content = inspect_bytes(raw)
            if content.digest == file.sha256:
                return path, content.data, rejected
            rejected.append(reject(path, content, dataset, file, data_dir))
    return None, b"", rejected


def _join(items: Sequence[str], last: str) -> str:
    """``a``, ``a or b``, ``a, b or c`` (with ``last`` the final conjunction)."""
    return f" {last} ".join([", ".join(items[:-1]), items[-1]] if len(items) > 1 else items)


def lookup_failed(
    dataset: IdxDataset,
    file: IdxFile,
    data_dir: Path,
    rejected: Sequence[Rejection],
    download_failure: str | None,
) -> str:
    """The message for a file not found: the cause first, then the fix, in short sentences.

    ``download_failure`` says why no mirror served the file; None when no download was tried.
    """
    title = dataset.display_name
    if rejected:
        sentences = [r.cause for r in rejected]
        if download_failure is not None:
            sentences.append(f"A good copy could not be downloaded ({download_failure}).")
        sentences += dict.fromkeys(r.fix for r in rejected)
    else:
        searched = _join([str(d) for d in candidate_dirs(dataset, data_dir)], "or")
        if download_failure is None:
            sentences = [f"{title}'s {file.name} is not in {searched}."]
        else:
            sentences = [
                f"{title}'s {file.name} is not in {searched} and could not be downloaded "
                f"({download_failure})."
            ]
        names = ", ".join(f.name for f in dataset.files)
        sentences.append(
            f"Put its four files ({names}, gzip or raw) in {data_dir / dataset.name}, or point "
            f"--data-dir / {DATA_ENV_VAR} at a folder that holds them."
        )
    if dataset.install_hint:
        sentences.append(dataset.install_hint)
    return " ".join(sentences)


def lookup_error(
    dataset: IdxDataset,
    file: IdxFile,
    data_dir: Path,
    rejected: Sequence[Rejection],
    download_failure: str | None,
) -> DataError:
    """The error for a file not found, with :func:`lookup_failed`'s message.

    A ChecksumError when every file found decompressed fine but held other content.
    """
    message = lookup_failed(dataset, file, data_dir, rejected, download_failure)
    if rejected and all(r.checksum for r in rejected):
        return ChecksumError(message)
    return DataError(message)


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


class MirrorsFailed(Exception):
    """No mirror served a good copy; the message says why, short enough for a parenthesis.

    Not a GlimpseError: :func:`load_idx_file` puts the message into one written for the user.
    """


def fetch(file: IdxFile, mirrors: Sequence[str]) -> tuple[bytes, bytes]:
    """The gzip payload and verified content of ``file`` from the first mirror that serves it."""
    failures: list[tuple[str, str]] = []
    for mirror in mirrors:
        url = f"{mirror.rstrip('/')}/{file.name}.gz"
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            failures.append((url, f"HTTP {error.code} {error.reason}"))
            continue
        except urllib.error.URLError as error:
            failures.append((url, str(error.reason)))
            continue
        except OSError as error:
            failures.append((url, str(error) or type(error).__name__))
            continue
        content = inspect_bytes(payload)
        if content.digest == file.sha256:
            return payload, content.data
        if content.gzip_error:
            failures.append((url, f"served a damaged file (gzip: {content.gzip_error})"))
        elif (known := content.known_as) is not None:
            failures.append((url, f"served {known[0].display_name}'s {known[1].name}"))
        else:
            failures.append((url, f"served other content (sha256 {content.digest[:12]}...)"))
    if not failures:
        raise MirrorsFailed("no mirror is configured")
    # Host names, not URLs: the file's name is already in the message around this one.
    hosts = [(urllib.parse.urlsplit(url).netloc or url, reason) for url, reason in failures]
    if len({reason for _, reason in hosts}) == 1:
        raise MirrorsFailed(f"tried {_join([host for host, _ in hosts], 'and')}: {hosts[0][1]}")
    raise MirrorsFailed("; ".join(f"{host}: {reason}" for host, reason in hosts))


def save(payload: bytes, target: Path) -> None:
    """Writes ``payload`` to ``target`` through a temporary file, creating folders only now.

    The user's data folder is touched only when there is a verified file to write, so a failed
    lookup leaves it as it was; the rename means an interrupted write never leaves a bad file.
    """
    part: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as tmp:
            part = Path(tmp.name)
            tmp.write(payload)
        os.replace(part, target)
    except OSError as error:
        if part is not None:
            part.unlink(missing_ok=True)
        reason = error.strerror or error
        raise DataError(
            f"Cannot write the downloaded {target.name} to {target.parent} ({reason}). Choose a "
            f"writable folder with --data-dir or {DATA_ENV_VAR}."
        ) from error


@lru_cache(maxsize=16)
def load_idx_file(
    dataset: IdxDataset, file: IdxFile, data_dir: Path, mirrors: tuple[str, ...]
) -> np.ndarray:
    """The verified array of one file, downloaded if missing (cached per process, read-only)."""
    path, content, rejected = find_verified(dataset, file, data_dir)
    if path is None:
        try:
            payload, content = fetch(file, mirrors)
        except MirrorsFailed as error:
            raise lookup_error(dataset, file, data_dir, rejected, str(error)) from None
        path = data_dir / dataset.name / f"{file.name}.gz"
        save(payload, path)
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
        path, _, rejected = find_verified(dataset, file, root)
        if path is None:
            return DatasetStatus(
                dataset.name, False, lookup_failed(dataset, file, root, rejected, None)
            )
        folders.add(str(path.parent))
    return DatasetStatus(dataset.name, True, f"verified in {', '.join(sorted(folders))}")
