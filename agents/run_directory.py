"""The run directory: one writer of run folders for every agent.

A run directory holds everything about one training run::

    runs/<name>/
      config.json            every setting the run used, defaults included, with the package
                             version and git commit (see glimpse.agents.runs)
      metrics.jsonl          one line per validation (epoch or env steps, seconds, val error ...)
      tb/                    TensorBoard event files
      checkpoints/last.*     the full training state, written atomically at every validation
      checkpoints/best.*     the model with the lowest validation error (weights only)
      test.json              the test error of the best model, written when training ends

:class:`RunDirectory` owns those paths and writes: the config, metric lines (also sent to
TensorBoard), atomic checkpoint writes, ``test.json``, and Ctrl-C / SIGTERM handling (the
loop checks a flag between steps, saves, and stops with the command that resumes it). The
training loops (:class:`glimpse.agents.trainer.Trainer` for the agents trained by gradient
steps over epochs, :func:`glimpse.agents.ppo.train_ppo` for SB3's) decide what a checkpoint
holds; they never touch the folder otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from glimpse.agents import distributed
from glimpse.config import check_at_least, check_fields, option
from glimpse.errors import ConfigError, GlimpseError

RUNTIME_SETTINGS = ("threads", "device")
"""Run settings for where and how fast a run trains, which a resumed run may change."""
RESULT_NEUTRAL_SETTINGS = frozenset({*RUNTIME_SETTINGS, "name", "runs_dir", "eval_episodes",
                                     "track_test"})  # fmt: skip
"""Run settings that do not change what a run learns: the runtime ones, where the run folder
lies, and how evaluation is batched and logged."""


class TrainingError(GlimpseError):
    """Training cannot go on (a non-finite loss, a checkpoint that does not fit the run)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped training after the state was checkpointed."""


@dataclass(frozen=True)
class RunConfig:
    """Where a run lives, its seed, and how it uses the machine (every agent has these)."""

    seed: int = option(1, "Seed of the model initialisation and of the training episodes.")
    device: str = option("auto", "auto (cuda if available), cpu or cuda.", ("auto", "cpu", "cuda"))
    threads: int = option(
        0, "torch CPU threads; 0: every core (use 1 when other processes share the cores)."
    )
    eval_episodes: int = option(1000, "Episodes run together when evaluating.")
    track_test: bool = option(
        False, "Also log the test error at every validation (learning curves; one test pass each)."
    )
    runs_dir: str = option("runs", "Folder that holds the run directories.")
    name: str | None = option(
        None, "Run directory name; default <recipe>-seed<seed>, else <env>-<agent>-seed<seed>."
    )

    def __post_init__(self) -> None:
        check_fields(self)
        check_at_least(self, 1, "eval_episodes")
        check_at_least(self, 0, "threads")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available.")
    return torch.device(name)


def set_threads(threads: int) -> None:
    """Uses ``threads`` torch threads; 0 keeps torch's default, one per core.

    Every core is fastest on an otherwise idle machine (PPO's policy and RAM run faster on 2
    threads than on 1 on 2 cores). When other processes keep the cores busy, threads that
    share a core wait on each other and training becomes several times slower than on one
    thread, so with 0 on a busy machine this says so (``--threads 1`` is the fix).
    """
    if threads:
        torch.set_num_threads(threads)
        return
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if cores > 1 and load >= 1.0:
        print(
            f"glimpse: other processes are keeping this machine busy (load average {load:.1f} "
            f"on {cores} cores); training on every core is then often several times slower "
            f"than on one: consider --threads 1.",
            file=sys.stderr,
        )


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it to ``path``: a crash
    never leaves half a file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.partial{path.suffix}")
    write(tmp)
    os.replace(tmp, path)


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint, or a clear error when it is missing, truncated or not ours."""
    if not path.is_file():
        raise TrainingError(f"Checkpoint {path} does not exist. Train first, or check the path.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises several types for a damaged file
        raise TrainingError(
            f"Checkpoint {path} cannot be read ({type(error).__name__}: {error}). It is "
            f"truncated or corrupted; use the other checkpoint in the same folder (best.pt or "
            f"last.pt) or train again."
        ) from error
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise TrainingError(f"{path} is not a glimpse checkpoint (no model weights in it).")
    return checkpoint


@contextlib.contextmanager
def interrupt_requests() -> Iterator[list[str]]:
    """Turns Ctrl-C and SIGTERM into a flag the loop checks between steps."""
    requested: list[str] = []

    def handler(signum: int, frame: object) -> None:
        requested.append(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class RunDirectory:
    """One run folder (see the module docstring); only the main process writes to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: Any = None  # TensorBoard's SummaryWriter, made at the first metric

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def test_path(self) -> Path:
        return self.path / "test.json"

    def checkpoint(self, kind: str, suffix: str = ".pt") -> Path:
        """``checkpoints/<kind><suffix>``: ``last`` or ``best``, ``.pt`` or SB3's ``.zip``."""
        return self.path / "checkpoints" / f"{kind}{suffix}"

    def start(self, config: dict[str, Any], resume: bool) -> None:
        """Makes the folder and writes ``config.json``; a new run never overwrites an old one."""
        if not resume and (self.path / "checkpoints").exists():
            raise ConfigError(
                f"{self.path} already holds a run. Continue it with --resume, or pick another "
                "--name."
            )
        if distributed.is_main():  # checkpoints/ comes with the first checkpoint
            self.path.mkdir(parents=True, exist_ok=True)
            text = json.dumps(config, indent=2) + "\n"
            atomic_write(self.config_path, lambda tmp: tmp.write_text(text))

    def log(self, record: dict[str, Any], step: str) -> None:
        """Appends ``record`` to ``metrics.jsonl`` and its numbers to TensorBoard at
        ``record[step]`` (images seen, or env steps)."""
        if not distributed.is_main():
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.path / "tb"))
        for key, value in record.items():
            if isinstance(value, float) and key not in ("epoch", "seconds"):
                self._writer.add_scalar(key, value, record[step])

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Writes ``test.json`` and returns ``summary``."""
        self.close()
        self.test_path.write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def interrupted(self, signal_name: str, where: str, saved: Path) -> TrainingInterrupted:
        """The exception that ends a run stopped by ``signal_name`` after saving ``saved``."""
        return TrainingInterrupted(
            f"{signal_name} at {where}: the state is saved in {saved}. Continue with: "
            f"glimpse train --resume {self.path}"
        )

    def best_validation_error(self) -> float:
        """The lowest validation error logged so far (infinite before the first)."""
        if not self.metrics_path.exists():
            return float("inf")
        return min(validation_curve(self.path)[1].values(), default=float("inf"))


def validation_curve(run_dir: Path) -> tuple[str, dict[int, float]]:
    """A run's validation error (%) by ``"epoch"`` (RAM, baselines) or ``"steps"`` (PPO).

    Read from the run's ``metrics.jsonl``, one line per validation; a resumed run's repeated
    line for the same epoch counts once (the later one).
    """
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise ConfigError(
            f"{run_dir} has no metrics.jsonl: name a run directory written by `glimpse train`, "
            "which adds a line to it at every validation."
        )
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise ConfigError(
                f"Line {number} of {path} is not JSON (cut short by a crash?): delete that "
                "line and run the command again."
            ) from None
    axis = "epoch" if not rows or "epoch" in rows[0] else "steps"
    try:
        return axis, {int(row[axis]): float(row["val_error"]) for row in rows}
    except KeyError as missing:
        raise ConfigError(
            f"A line of {path} has no {missing}: it is not a glimpse metrics file (each line "
            f"needs {axis!r} and 'val_error'); name a run directory written by `glimpse train`."
        ) from None
