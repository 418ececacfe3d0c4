"""Bad input through the command line: a short message naming the problem and the fix.

Each row of ``CASES`` is something a user gets wrong (a wrong id, a wrong option value,
missing, truncated or corrupted data, a damaged checkpoint, a folder that is not a run, an
interrupted run). Each must end with exit status 2, no traceback, a message that names the
problem and the fix, and the user's folders exactly as they were: nothing lost, nothing left
behind.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MNIST = Path(os.environ.get("GLIMPSE_DATA", ROOT.parent / "shared" / "data" / "mnist"))
PUBLISHED_RUN = ROOT / "results" / "mnist-6-ram-seed1"
TRAIN_IMAGES = "train-images-idx3-ubyte.gz"


def mnist_folder(tmp: Path) -> Path:
    """A copy of the MNIST files in ``tmp/data/mnist`` (GLIMPSE_DATA is ``tmp/data``)."""
    folder = tmp / "data" / "mnist"
    folder.mkdir(parents=True)
    for file in MNIST.glob("*.gz"):
        shutil.copy(file, folder / file.name)
    return folder


def truncated_data(tmp: Path) -> None:
    file = mnist_folder(tmp) / TRAIN_IMAGES
    file.write_bytes(file.read_bytes()[:100_000])


def corrupted_data(tmp: Path) -> None:
    """A whole gzip file whose content differs from the published one by one pixel."""
    file = mnist_folder(tmp) / TRAIN_IMAGES
    content = bytearray(gzip.decompress(file.read_bytes()))
    content[5_000] ^= 0xFF
    file.write_bytes(gzip.compress(bytes(content)))


def empty_data(tmp: Path) -> None:
    (tmp / "data").mkdir()


def published_run(tmp: Path) -> Path:
    run = tmp / "run"
    shutil.copytree(PUBLISHED_RUN, run)
    return run


def damaged_best_checkpoint(tmp: Path) -> None:
    best = published_run(tmp) / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:2_000])


def pickled_payload_checkpoint(tmp: Path) -> None:
    """A checkpoint that would run a command when unpickled with ``weights_only=False``."""
    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp / 'payload-ran'}",))

    best = published_run(tmp) / "checkpoints" / "best.pt"
    torch.save({"model": {}, "payload": Payload()}, best)


def broken_config(tmp: Path) -> None:
    (published_run(tmp) / "config.json").write_text('{"format": 2, "agent": ')


def not_a_run(tmp: Path) -> None:
    (tmp / "notes").mkdir()
    (tmp / "notes" / "todo.txt").write_text("a folder, not a run")


def run_without_checkpoint(tmp: Path) -> None:
    shutil.rmtree(published_run(tmp) / "checkpoints")


@dataclass(frozen=True)
class BadInput:
    """A command line (``{tmp}`` is the test's folder), what it sets up first, and two
    patterns the message must match: one naming the problem, one the fix."""

    name: str
    args: str
    problem: str
    fix: str
    setup: Callable[[Path], object] | None = None
    data: bool = False  # GLIMPSE_DATA is {tmp}/data


TRAIN_MNIST = "train ram --env Glimpse/MNIST-v0 --epochs 1 --threads 1"
CASES = [
    BadInput("unknown env id", "train ram --env Glimpse/MNSIT-v0",
             r"Glimpse/MNSIT-v0", r"Glimpse/MNIST-v0"),
    BadInput("unknown agent", "train dqn --env Glimpse/MNIST-v0", r"'dqn'", r"ram, ppo"),
    BadInput("unknown recipe", "train --recipe mnist-9-ram", r"mnist-9-ram", r"glimpse recipes"),
    BadInput("not a number", f"{TRAIN_MNIST} --lr fast", r"'fast'", r"--help"),
    BadInput("out of range", f"{TRAIN_MNIST} --epochs 0", r"epochs", r"at least 1"),
    BadInput("not a choice", f"{TRAIN_MNIST} --optimizer adamw", r"adamw", r"adam"),
    BadInput("another agent's option", "train ppo --env Glimpse/MNIST-v0 --lr 1e-3",
             r"--lr is not an option of ppo", r"glimpse train ppo --help"),
    BadInput("a setting the task does not read", f"{TRAIN_MNIST} --size 60",
             r"size", r"leave it out"),
    BadInput("resume with other settings", "train --resume {tmp}/run --lr 1e-3",
             r"--resume", r"--config", setup=published_run),
    BadInput("resume of a folder that is not a run", "train --resume {tmp}/notes",
             r"config\.json", r"pass a run directory", setup=not_a_run),
    BadInput("resume of a run without its checkpoints", "train --resume {tmp}/run",
             r"last\.pt does not exist", r"train the run again", setup=run_without_checkpoint),
    BadInput("missing data", TRAIN_MNIST, r"MNIST", r"GLIMPSE_DATA",
             setup=empty_data, data=True),
    BadInput("truncated data", TRAIN_MNIST, r"train-images-idx3-ubyte", r"(truncated|corrupt)",
             setup=truncated_data, data=True),
    BadInput("corrupted data", TRAIN_MNIST, r"train-images-idx3-ubyte", r"corrupt",
             setup=corrupted_data, data=True),
    BadInput("eval of a missing folder", "eval {tmp}/nowhere", r"nowhere", r"run directory"),
    BadInput("eval of a folder that is not a run", "eval {tmp}/notes",
             r"config\.json", r"pass a run directory", setup=not_a_run),
    BadInput("eval with a broken config.json", "eval {tmp}/run",
             r"config\.json", r"JSON", setup=broken_config),
    BadInput("eval with a damaged best.pt", "eval {tmp}/run",
             r"best\.pt", r"--checkpoint last", setup=damaged_best_checkpoint),
    BadInput("eval of a checkpoint that carries code", "eval {tmp}/run",
             r"best\.pt", r"(pickle|code|tensors)", setup=pickled_payload_checkpoint),
    BadInput("viz of a missing folder", "viz {tmp}/nowhere", r"nowhere", r"run directory"),
    BadInput("curves of a folder that is not a run", "curves {tmp}/notes",
             r"notes", r"metrics", setup=not_a_run),
    BadInput("compare of an unknown recipe", "compare mnist-9-ram", r"mnist-9-ram",
             r"glimpse recipes"),
    BadInput("data show of an unknown task", "data show --task mnsit", r"mnsit", r"mnist"),
    BadInput("eval split that does not exist", "eval {tmp}/run --split train",
             r"train", r"(val|test)", setup=published_run),
]  # fmt: skip


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` with a digest of its content."""
    return {
        str(path.relative_to(folder)): (
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
        )
        for path in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_bad_input_is_a_clear_error_and_changes_nothing(case, tmp_path):
    if case.data and not MNIST.is_dir():
        pytest.skip("needs the MNIST files")
    if case.setup:
        case.setup(tmp_path)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if case.data:
        env["GLIMPSE_DATA"] = str(tmp_path / "data")
    before = snapshot(tmp_path)
    args = case.args.format(tmp=tmp_path).split()
    result = subprocess.run(
        [sys.executable, "-m", "glimpse.cli", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    message = " ".join(result.stderr.split())
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert re.search(case.problem, message, re.I), f"the problem is not named: {result.stderr}"
    assert re.search(case.fix, message, re.I), f"the fix is not named: {result.stderr}"
    assert len(result.stderr) < 1_200, f"too long to read: {result.stderr}"
    assert snapshot(tmp_path) == before, "the command changed the user's files"
    assert not (tmp_path / "payload-ran").exists(), "a checkpoint ran code"
