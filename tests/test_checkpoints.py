"""Checkpoints: a damaged one falls back on the one before, a failed start leaves no folder,
and loading runs no code that a file carries."""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from glimpse.agents.learners import RAMLearner
from glimpse.agents.ppo import ValidationCallback
from glimpse.agents.run_directory import CheckpointError, load_checkpoint
from glimpse.cli import main

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED_RAM = ROOT / "results" / "mnist-6-ram-seed1"
PUBLISHED_PPO = ROOT / "results" / "mnist-ppo-seed1"
TINY = [
    "ram", "--env", "Glimpse/MNIST-v0", "--epochs", "2", "--epoch-size", "1024",
    "--batch-size", "64", "--val-size", "500", "--eval-episodes", "500", "--no-progress",
]  # fmt: skip
SMALL_PPO = [
    "ppo", "--env", "Glimpse/MNIST-v0", "--n-envs", "16", "--n-steps", "32",
    "--batch-size", "256", "--eval-every", "1024", "--eval-episodes", "500",
    "--val-size", "500", "--total-steps", "3072", "--no-progress",
]  # fmt: skip


class Payload:
    """Unpickled, it runs a command that leaves ``marker`` behind."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def glimpse_cli(*args, **env):
    """The command line in a subprocess, with ``env`` added to the environment."""
    return subprocess.run([sys.executable, "-m", "glimpse.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **env})  # fmt: skip


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def metrics(run: Path) -> list[dict]:
    """Each validation's line; the later one where a resumed run validated an epoch twice."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    keep = ("epoch", "val_error", "train_total", "lr")
    return list({row["epoch"]: {k: row[k] for k in keep} for row in rows}.values())


# -- resume ------------------------------------------------------------------------------------


def test_a_damaged_last_checkpoint_resumes_from_the_previous_one(tmp_path, monkeypatch, capsys):
    runs = ["--runs-dir", str(tmp_path)]
    assert main(["train", *TINY, *runs, "--name", "straight"]) == 0
    assert not (tmp_path / "straight/checkpoints/previous.pt").exists()  # deleted at the end
    original_loss = RAMLearner.loss
    calls = {"n": 0}

    def interrupted_loss(self, batch_size, progress):
        calls["n"] += 1
        if calls["n"] == 21:  # epoch 2, batch 5
            os.kill(os.getpid(), signal.SIGINT)
        return original_loss(self, batch_size, progress)

    monkeypatch.setattr(RAMLearner, "loss", interrupted_loss)
    assert main(["train", *TINY, *runs, "--name", "cut"]) == 130
    monkeypatch.setattr(RAMLearner, "loss", original_loss)
    run = tmp_path / "cut"
    # every checkpoint holds tensors and plain data only: torch loads it without an allowlist
    for name in ("last", "previous"):
        torch.load(run / f"checkpoints/{name}.pt", weights_only=True)
    assert load_checkpoint(run / "checkpoints/previous.pt")["epoch"] == 1  # the epoch's end
    truncate(run / "checkpoints/last.pt")  # say the disk filled up while it was copied
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert "glimpse: checkpoints/last.pt is damaged (truncated or corrupted: " in said
    assert (f"; resuming {run} from checkpoints/previous.pt at epoch 2 of 2, batch 0 of 16"
            in said)  # fmt: skip
    assert metrics(run) == metrics(tmp_path / "straight")
    assert not (run / "checkpoints/previous.pt").exists()


def test_without_a_checkpoint_to_fall_back_on_resume_names_the_fix(tmp_path, capsys):
    assert main(["train", *TINY, "--epochs", "1", "--runs-dir", str(tmp_path), "--name", "r"]) == 0
    run = tmp_path / "r"
    truncate(run / "checkpoints/last.pt")
    before = (run / "config.json").read_bytes()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "checkpoints/last.pt is damaged (truncated or corrupted" in error
    assert "train the run again" in error and "Traceback" not in error
    assert (run / "config.json").read_bytes() == before


def test_a_damaged_last_ppo_zip_resumes_from_the_previous_one(tmp_path, monkeypatch, capsys):
    original = ValidationCallback._on_step

    def interrupt_at_2560(self):
        if self.num_timesteps == 2560:  # between the validations at 2,048 and 3,072
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self)

    monkeypatch.setattr(ValidationCallback, "_on_step", interrupt_at_2560)
    assert main(["train", *SMALL_PPO, "--runs-dir", str(tmp_path), "--name", "run"]) == 130
    monkeypatch.setattr(ValidationCallback, "_on_step", original)
    run = tmp_path / "run"
    for name in ("last.zip", "last.json", "previous.zip", "previous.json"):
        assert (run / "checkpoints" / name).is_file(), name
    truncate(run / "checkpoints/last.zip")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert "glimpse: checkpoints/last.zip is damaged (truncated or corrupted: " in said
    assert f"; resuming {run} from checkpoints/previous.zip at step 2,048 of 3,072" in said
    steps = [json.loads(line)["steps"] for line in
             (run / "metrics.jsonl").read_text().splitlines()]  # fmt: skip
    assert steps == [1024, 2048, 3072]
    assert json.loads((run / "test.json").read_text())["steps"] == 3072
    assert not list((run / "checkpoints").glob("previous.*"))


# -- a failed start ----------------------------------------------------------------------------


def test_a_run_without_its_data_leaves_no_run_folder(tmp_path):
    (tmp_path / "data").mkdir()
    result = glimpse_cli("train", *TINY, "--runs-dir", str(tmp_path / "runs"), "--name", "r",
                         GLIMPSE_DATA=str(tmp_path / "data"))  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_setting_the_model_refuses_leaves_no_run_folder(tmp_path, capsys):
    config = json.loads((PUBLISHED_RAM / "config.json").read_text())
    config["env"]["class_reward"] = "log-likelihood"  # RAM computes its own reward
    (tmp_path / "bad.json").write_text(json.dumps(config))
    args = ["--config", str(tmp_path / "bad.json"), "--runs-dir", str(tmp_path), "--name", "bad"]
    assert main(["train", *args, "--no-progress"]) == 2
    assert "--class-reward" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


# -- starting from another run's weights ------------------------------------------------------


def test_init_from_starts_a_run_from_another_runs_trained_weights(tmp_path, capsys):
    runs = ["--runs-dir", str(tmp_path)]
    assert main(["train", *TINY, "--epochs", "1", *runs, "--name", "source"]) == 0
    source = tmp_path / "source"
    # a learning rate too small to move the weights: the new run validates the source's model
    args = [*TINY, "--epochs", "1", "--lr", "1e-12", *runs, "--name", "next"]
    assert main(["train", *args, "--init-from", str(source)]) == 0
    assert f"starting from the weights of {source}/checkpoints/best.pt" in capsys.readouterr().out
    assert metrics(tmp_path / "next")[0]["val_error"] == metrics(source)[0]["val_error"]
    before = load_checkpoint(source / "checkpoints/best.pt")["model"]
    after = load_checkpoint(tmp_path / "next/checkpoints/best.pt")["model"]
    assert all(torch.allclose(before[k].float(), after[k].float()) for k in before)
    config = json.loads((tmp_path / "next/config.json").read_text())
    assert config["train"]["init_from"] == str(source)  # recorded like every setting
    # without it, the same command starts elsewhere
    assert main(["train", *args[:-1], "fresh"]) == 0
    fresh = load_checkpoint(tmp_path / "fresh/checkpoints/best.pt")["model"]
    assert not all(torch.allclose(before[k].float(), fresh[k].float()) for k in before)
    # --resume continues from the run's own checkpoint: the source is not read again
    shutil.rmtree(source)
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "next"), "--no-progress"]) == 0
    assert "starting from the weights" not in capsys.readouterr().out


def test_init_from_a_missing_or_misfitting_run_is_a_clear_error_and_leaves_no_folder(
    tmp_path, capsys
):
    runs = ["--runs-dir", str(tmp_path)]
    assert main(["train", *TINY, "--epochs", "1", *runs, "--name", "source"]) == 0
    capsys.readouterr()
    missing = tmp_path / "no-such-run"
    assert main(["train", *TINY, *runs, "--name", "a", "--init-from", str(missing)]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "does not exist" in error and "Check --init-from" in error
    assert "Traceback" not in error and not (tmp_path / "a").exists()
    wider = ["--hidden-size", "64", "--init-from", str(tmp_path / "source")]
    assert main(["train", *TINY, *runs, "--name", "b", *wider]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "do not fit the model" in error and "same networks, glimpse shape" in error
    assert "Traceback" not in error and not (tmp_path / "b").exists()


# -- loading runs no code ----------------------------------------------------------------------


def test_a_checkpoint_that_carries_code_is_refused_and_the_code_does_not_run(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(PUBLISHED_RAM, run)
    marker = tmp_path / "payload-ran"
    torch.save({"model": {}, "payload": Payload(marker)}, run / "checkpoints/best.pt")
    assert main(["eval", str(run)]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "best.pt holds pickled Python objects, not only tensors and plain data" in error
    assert "posix.system" in error and "can run any code" in error
    assert main(["viz", str(run), "--out", str(tmp_path / "t.gif")]) == 2
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_checkpoint(run / "checkpoints/best.pt")
    assert not marker.exists()


def test_a_damaged_best_checkpoint_names_the_other_one(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(PUBLISHED_RAM, run)
    truncate(run / "checkpoints/best.pt")
    assert main(["eval", str(run)]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "best.pt is damaged (truncated or corrupted" in error
    assert "--checkpoint last" in error


def _rewrite_zip(path: Path, change) -> None:
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    change(entries)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


def test_a_ppo_zip_is_loaded_without_unpickling_what_it_carries(tmp_path, capsys):
    """SB3 keeps spaces, schedules and the last observations pickled in the zip's ``data``:
    glimpse rebuilds or leaves out every one, so a payload there never runs, and the model
    still gives its published figure."""
    run = tmp_path / "run"
    shutil.copytree(PUBLISHED_PPO, run)
    marker = tmp_path / "payload-ran"
    pickled = base64.b64encode(pickle.dumps(Payload(marker))).decode()
    payload = {":type:": "<class 'dict'>", ":serialized:": pickled}

    def plant(entries):
        data = json.loads(entries["data"])
        data["_last_obs"] = data["observation_space"] = data["anything_new"] = payload
        entries["data"] = json.dumps(data).encode()

    _rewrite_zip(run / "checkpoints/best.zip", plant)
    assert main(["eval", str(run)]) == 0
    published = json.loads((run / "test.json").read_text())["test_error"]
    assert f"test error {published:.2f}%" in capsys.readouterr().out
    assert not marker.exists()

    def plant_in_weights(entries):  # the tensors' own pickle: torch refuses it
        buffer = io.BytesIO()
        torch.save({"payload": Payload(marker)}, buffer)
        entries["policy.pth"] = buffer.getvalue()

    _rewrite_zip(run / "checkpoints/best.zip", plant_in_weights)
    assert main(["eval", str(run)]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "best.zip holds pickled Python objects" in error and "posix.system" in error
    assert not marker.exists()


def _with_numpy_1_names(path: Path) -> None:
    """Rewrites a checkpoint as numpy 1 pickled its arrays (``numpy.core``, not ``numpy._core``;
    torch's pickles name globals by newline-ended text, so the bytes can simply change)."""

    def rename(entries):
        for name in entries:
            if name.endswith("data.pkl"):
                entries[name] = entries[name].replace(b"numpy._core.", b"numpy.core.")

    _rewrite_zip(path, rename)


@pytest.mark.parametrize("numpy_1", [False, True])
def test_checkpoints_of_older_versions_with_numpy_arrays_still_load(tmp_path, numpy_1):
    """Until the training state was kept as plain data, the RAM learner saved its data stream
    as numpy arrays: these few numpy types are allowed by name."""
    path = tmp_path / "last.pt"
    keys = np.arange(4, dtype=np.uint64) * np.uint64(2**62)
    torch.save({"model": {"w": torch.ones(2)}, "data": {"keys": keys, "episode_numbers":
                np.zeros(4, np.uint64)}, "best_val_error": np.float64(1.5)}, path)  # fmt: skip
    if numpy_1:
        _with_numpy_1_names(path)
        assert b"numpy.core.multiarray" in zipfile.ZipFile(path).read("last/data.pkl")
    loaded = load_checkpoint(path)
    np.testing.assert_array_equal(loaded["data"]["keys"], keys)
    assert loaded["best_val_error"] == 1.5
