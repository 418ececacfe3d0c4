"""Finding, downloading, verifying and reading dataset files."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import os
import re
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_MNIST, idx_bytes, make_tiny_dataset

from glimpse.data import (
    FASHION_MNIST,
    KNOWN_FILES,
    MNIST,
    check_dataset,
    load_idx_dataset,
    load_idx_file,
    parse_idx,
    resolve_data_dir,
)
from glimpse.errors import ChecksumError, DataError


@pytest.fixture(autouse=True)
def fresh_file_cache():
    load_idx_file.cache_clear()
    yield
    load_idx_file.cache_clear()


def test_mnist_loads_verified_from_the_shared_folder():
    train, test = load_idx_dataset(MNIST)
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == np.uint8
    assert test.images.shape == (10000, 1, 28, 28)
    assert test.labels[:8].tolist() == [7, 2, 1, 0, 4, 1, 4, 9]
    assert set(np.unique(train.labels)) == set(range(10))


def test_raw_and_gzip_files_read_the_same(tmp_path):
    spec = make_tiny_dataset(tmp_path / "gz")
    raw_folder = tmp_path / "raw"
    raw_folder.mkdir()
    for file in spec.files:
        raw = gzip.decompress((tmp_path / "gz" / f"{file.name}.gz").read_bytes())
        (raw_folder / file.name).write_bytes(raw)
    from_gz, _ = load_idx_dataset(spec, tmp_path / "gz")
    from_raw, _ = load_idx_dataset(spec, raw_folder)
    assert np.array_equal(from_gz.images, from_raw.images)


def test_data_dir_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("GLIMPSE_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("GLIMPSE_DATA")
    assert resolve_data_dir(None) == tmp_path / "cache" / "glimpse"


def test_files_of_another_dataset_with_the_same_name_are_skipped(tmp_path):
    """A bare data folder may hold MNIST while Fashion-MNIST (same file names) lives elsewhere."""
    other = make_tiny_dataset(tmp_path / "data", name="other", seed=1)
    wanted = make_tiny_dataset(tmp_path / "data" / "wanted", name="wanted", seed=2)
    assert other.train_images.sha256 != wanted.train_images.sha256
    train, _ = load_idx_dataset(wanted, tmp_path / "data")
    expected = parse_idx(
        gzip.decompress((tmp_path / "data/wanted/train-images-idx3-ubyte.gz").read_bytes()), Path()
    )
    assert np.array_equal(train.images[:, 0], expected)


def test_truncated_gzip_names_the_file(tmp_path):
    spec = make_tiny_dataset(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz in .* is corrupted \(gzip"):
        load_idx_dataset(spec, tmp_path)


def test_truncated_raw_idx_is_reported():
    content = idx_bytes(np.zeros((3, 4, 4)))[:-5]
    with pytest.raises(DataError, match=r"header announces shape \(3, 4, 4\)"):
        parse_idx(content, Path("x-idx3-ubyte"))


def test_wrong_checksum_is_an_error_naming_file_and_digest(tmp_path):
    spec = make_tiny_dataset(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    changed = idx_bytes(np.full(4, 3))
    path.write_bytes(gzip.compress(changed))
    with pytest.raises(ChecksumError) as error:
        load_idx_dataset(spec, tmp_path, mirrors=())
    message = str(error.value)
    assert message.startswith(
        f"tiny's t10k-labels-idx1-ubyte.gz in {tmp_path} is not the published file"
    )
    assert hashlib.sha256(changed).hexdigest()[:12] in message
    assert spec.test_labels.sha256[:12] in message
    status = check_dataset(spec, tmp_path)
    assert not status.ok and status.detail.startswith(message.split(" A good copy")[0])


def closed_port_url() -> str:
    """A mirror URL on a local port nothing listens on: downloads fail fast, as offline."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/"


def snapshot(folder: Path) -> list[tuple[str, bytes]]:
    """Every path under ``folder`` (itself included) with the content of the files."""
    if not folder.exists():
        return []
    paths = [folder, *sorted(folder.rglob("*"))]
    return [(str(p), p.read_bytes() if p.is_file() else b"") for p in paths]


def test_another_known_datasets_file_is_named_as_that_file_not_called_corrupt(
    tmp_path, monkeypatch
):
    """Same file names, another dataset's content: say whose file it is; never 'delete it'."""
    other = dataclasses.replace(
        make_tiny_dataset(tmp_path / "data" / "wanted", name="other", seed=1), title="Other"
    )
    wanted = make_tiny_dataset(tmp_path / "elsewhere", name="wanted", seed=2)
    for file in other.files:
        monkeypatch.setitem(KNOWN_FILES, file.sha256, (other, file))
    data_dir, folder = tmp_path / "data", tmp_path / "data" / "wanted"
    cause = (
        f"The train-images-idx3-ubyte.gz in {folder} is Other's train-images-idx3-ubyte, not "
        f"wanted's."
    )
    fix = f"Put wanted's files in {folder} instead (Other's belong in {data_dir / 'other'})."
    with pytest.raises(ChecksumError) as error:
        load_idx_dataset(wanted, data_dir, mirrors=(closed_port_url(),))
    message = str(error.value)
    assert message.startswith(f"{cause} A good copy could not be downloaded")
    assert message.endswith(fix)
    status = check_dataset(wanted, data_dir)
    assert status.detail == f"{cause} {fix}"
    for text in (message, status.detail):
        assert not re.search(r"(?i)corrupt|delete", text), text


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="needs the MNIST files")
def test_mnist_files_where_fashion_mnist_is_looked_for_are_named_as_mnist(tmp_path):
    fashion = dataclasses.replace(FASHION_MNIST, system_dirs=())  # ignore an installed copy
    folder = tmp_path / "data" / "fashion-mnist"
    folder.mkdir(parents=True)
    for file in SHARED_MNIST.glob("*.gz"):
        os.symlink(file, folder / file.name)
    in_fashion_folder = check_dataset(fashion, tmp_path / "data").detail
    assert in_fashion_folder.startswith(
        f"The train-images-idx3-ubyte.gz in {folder} is MNIST's train-images-idx3-ubyte, not "
        f"Fashion-MNIST's. Put Fashion-MNIST's files in {folder} instead"
    )
    data_dir_is_mnist = check_dataset(fashion, SHARED_MNIST).detail  # GLIMPSE_DATA=.../mnist
    assert data_dir_is_mnist.startswith(
        f"The train-images-idx3-ubyte.gz in {SHARED_MNIST} is MNIST's train-images-idx3-ubyte, "
        f"not Fashion-MNIST's. Point --data-dir / GLIMPSE_DATA at a folder that holds mnist/ "
        f"and fashion-mnist/ subfolders"
    )
    for detail in (in_fashion_folder, data_dir_is_mnist):
        assert not re.search(r"(?i)corrupt|delete", detail), detail
        assert "apt-get install dataset-fashion-mnist" in detail


def test_a_corrupted_file_leads_the_message_with_its_cause_then_the_fix(tmp_path):
    spec = make_tiny_dataset(tmp_path / "data" / "tiny")
    folder = tmp_path / "data" / "tiny"
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    url = closed_port_url()
    with pytest.raises(DataError) as error:
        load_idx_dataset(spec, tmp_path / "data", mirrors=(url,))
    message = str(error.value)
    assert not isinstance(error.value, ChecksumError)
    cause = (
        f"tiny's train-images-idx3-ubyte.gz in {folder} is corrupted (gzip: Compressed file "
        f"ended before the end-of-stream marker was reached)."
    )
    assert message == (
        f"{cause} A good copy could not be downloaded (tried {url[7:-1]}: [Errno 111] "
        f"Connection refused). Copy a good file over it, or delete it and run again to "
        f"download a fresh copy."
    )
    assert check_dataset(spec, tmp_path / "data").detail.startswith(cause)


def test_a_failed_lookup_or_check_creates_nothing_in_the_data_folder(tmp_path):
    spec = make_tiny_dataset(tmp_path / "elsewhere")
    data_dir = tmp_path / "data"
    (data_dir / "notes").mkdir(parents=True)
    (data_dir / "notes" / "todo.txt").write_text("the user's own file")
    for folder in (data_dir, tmp_path / "not-yet-there"):
        before = snapshot(folder)
        with pytest.raises(DataError, match="could not be downloaded"):
            load_idx_dataset(spec, folder, mirrors=(closed_port_url(),))
        assert not check_dataset(spec, folder).ok
        assert snapshot(folder) == before, f"{folder} changed"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def local_mirror(tmp_path):
    """A local HTTP server serving a tiny dataset's gzip files."""
    spec = make_tiny_dataset(tmp_path / "mirror")
    handler = functools.partial(_QuietHandler, directory=str(tmp_path / "mirror"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield spec, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_missing_files_are_downloaded_verified_and_written_atomically(local_mirror, tmp_path):
    spec, url = local_mirror
    data_dir = tmp_path / "data"
    train, test = load_idx_dataset(spec, data_dir, mirrors=("http://127.0.0.1:1/", url))
    assert train.images.shape == (12, 1, 28, 28) and len(test) == 4
    written = sorted(p.name for p in (data_dir / "tiny").iterdir())
    assert written == sorted(f"{f.name}.gz" for f in spec.files)  # no leftover .part files
    assert check_dataset(spec, data_dir).ok


def test_a_mirror_serving_bad_content_is_not_written(local_mirror, tmp_path):
    spec, url = local_mirror
    mirror_file = tmp_path / "mirror" / "train-labels-idx1-ubyte.gz"
    mirror_file.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00\x00\x00\x01" + b"\x07"))
    with pytest.raises(
        DataError,
        match=r"could not be downloaded \(tried 127\.0\.0\.1:\d+: served "
        r"other content \(sha256 [0-9a-f]{12}\.\.\.\)\)",
    ):
        load_idx_dataset(spec, tmp_path / "data", mirrors=(url,))
    assert not (tmp_path / "data" / "tiny" / "train-labels-idx1-ubyte.gz").exists()


def test_offline_gives_a_clear_error_with_the_fix(tmp_path):
    spec = make_tiny_dataset(tmp_path / "elsewhere")
    with pytest.raises(DataError) as error:
        load_idx_dataset(spec, tmp_path / "empty", mirrors=(closed_port_url(),))
    message = str(error.value)
    assert message.startswith(f"tiny's train-images-idx3-ubyte is not in {tmp_path / 'empty'}")
    assert "could not be downloaded" in message and "Connection refused" in message
    assert "--data-dir" in message and "GLIMPSE_DATA" in message
    assert not isinstance(error.value, ChecksumError)
