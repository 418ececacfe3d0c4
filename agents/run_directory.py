"""The run directory: one writer of run folders for every agent.

A run directory holds everything about one training run::

    runs/<name>/
      config.json            every setting the run used, defaults included, with the package
                             version and git commit (see glimpse.agents.runs)
      metrics.jsonl          one line per validation (epoch or env steps, seconds, val error ...)
      tb/                    TensorBoard event files
      checkpoints/last.*     the full training state, written atomically at every validation
      checkpoints/previous.* the full training state before it, until training ends
      checkpoints/best.*     the model with the lowest validation error (weights only)
      test.json              the test error of the best model, written when training ends

:class:`RunDirectory` owns those paths and writes: the config, metric lines (also sent to
TensorBoard), atomic checkpoint writes, ``test.json``, and Ctrl-C / SIGTERM handling (the
loop checks a flag between steps, saves, and stops with the command that resumes it). The
training loops (:class:`glimpse.agents.trainer.Trainer` for the agents trained by gradient
steps over epochs, :func:`glimpse.agents.ppo.train_ppo` for SB3's) decide what a checkpoint
holds; they never touch the folder otherwise.

Nothing is written until the run can start: the loops call :meth:`RunDirectory.start` once the
data is loaded, the model built and, for ``--resume``, the saved state read back, so a run that
fails to start leaves no folder behind (nor changes the one it would resume).

A resumed run continues from ``last.*``; where that one is damaged (a full disk, a copy cut
short), from ``previous.*``, the state saved one validation earlier, saying so on stderr.
Evaluation never needs ``previous.*``, and a finished run deletes it.

Checkpoints are loaded with ``torch.load(weights_only=True)``: tensors and plain data only.
Unpickling anything else can run any code a file names, and a run folder is something people
download and share. Checkpoints written before the training state was kept as plain data hold
numpy arrays (the RAM learner's data stream); those few numpy types are allowed by name
(:data:`NUMPY_GLOBALS`), nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from glimpse.agents import distributed
from glimpse.config import check_at_least, check_fields, option
from glimpse.errors import ConfigError, GlimpseError

T = TypeVar("T")

RUNTIME_SETTINGS = ("threads", "device")
"""Run settings for where and how fast a run trains, which a resumed run may change."""
RESULT_NEUTRAL_SETTINGS = frozenset({*RUNTIME_SETTINGS, "name", "runs_dir", "eval_episodes",
                                     "track_test"})  # fmt: skip
"""Run settings that do not change what a run learns: the runtime ones, where the run folder
lies, and how evaluation is batched and logged."""


class TrainingError(GlimpseError):
    """Training cannot go on (a non-finite loss, a checkpoint that does not fit the run)."""


class CheckpointError(TrainingError):
    """A checkpoint that is missing, damaged, or holds more than tensors and plain data.

    ``problem`` completes a sentence that starts with the path (``is damaged (...)``), for
    messages that go on differently (a resume that falls back on the checkpoint before).
    """

    def __init__(self, path: Path, problem: str, fix: str) -> None:
        super().__init__(f"{path} {problem}. {fix}")
        self.path, self.problem = path, problem


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
    thread, so with 0 on a busy machine this says so (``--threads 1`` is the fix). Busy means
    busy now (:func:`cores_busy_elsewhere`), not the load average, which lags by minutes: right
    after ``pip install`` it still counts the build on an idle machine.
    """
    if threads:
        torch.set_num_threads(threads)
        return
    cores = os.cpu_count() or 1
    if cores == 1:
        return
    busy = cores_busy_elsewhere()
    if busy is not None and busy > BUSY_CORES:
        print(
            f"glimpse: other processes are keeping {busy:.1f} of this machine's {cores} cores "
            f"busy; training on every core is then often several times slower than on one: "
            f"consider --threads 1.",
            file=sys.stderr,
        )


BUSY_CORES = 0.5
"""Cores other processes must keep busy, on average, for :func:`set_threads` to warn."""


def cores_busy_elsewhere(interval: float = 0.2) -> float | None:
    """How many cores other processes kept busy over the next ``interval`` seconds, on
    average: the CPU time of the whole machine less this process's, over the wall time.
    None where ``/proc`` is absent (macOS, Windows): no warning rather than a guess."""
    before, start = cpu_seconds(), time.monotonic()
    time.sleep(interval)
    after, elapsed = cpu_seconds(), time.monotonic() - start
    if before is None or after is None or elapsed <= 0:
        return None
    (machine_before, own_before), (machine_after, own_after) = before, after
    return max(0.0, (machine_after - machine_before) - (own_after - own_before)) / elapsed


def cpu_seconds() -> tuple[float, float] | None:
    """CPU seconds used so far by the whole machine (every core's user, nice, system and
    interrupt time in ``/proc/stat``) and by this process (its ``utime`` and ``stime`` in
    ``/proc/self/stat``); None without ``/proc``."""
    try:
        machine = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    # cpu user nice system idle iowait irq softirq ...: waiting (idle, iowait) is not busy
    user, nice, system, _, _, irq, softirq = (int(v) for v in machine[1:8])
    # the fields after the command name, from the state (field 3 in proc(5)) on: utime is
    # field 14, stime 15
    utime, stime = int(own[11]), int(own[12])
    return (user + nice + system + irq + softirq) / ticks, (utime + stime) / ticks


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


_MULTIARRAY = (np._core if hasattr(np, "_core") else np.core).multiarray  # numpy 2, numpy 1
NUMPY_GLOBALS: list[Any] = [
    np.ndarray, np.dtype,
    *(type(np.dtype(t)) for t in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16",
                                  "uint32", "uint64", "float16", "float32", "float64")),
    # under both names: numpy 2 pickles them from numpy._core, numpy 1 from numpy.core
    *((getattr(_MULTIARRAY, name), f"{package}.multiarray.{name}")
      for name in ("_reconstruct", "scalar") for package in ("numpy._core", "numpy.core")),
]  # fmt: skip
"""What ``torch.load(weights_only=True)`` may build besides tensors and plain data: numpy
arrays and scalars of numeric types, which checkpoints of older glimpse versions hold (arrays
cannot run code; the classes and functions that pickles name are the danger)."""


TRAIN_AGAIN = "Train the run again, or check the path."
RESUME_FIX = "No full training state is left to resume from: train the run again (another --name)."


def load_tensors(path: Path, fix: str = TRAIN_AGAIN) -> Any:
    """``torch.load(path, weights_only=True)`` with :data:`NUMPY_GLOBALS` allowed; a file that
    names any other class or function, or cannot be read, is a :class:`CheckpointError` whose
    message ends with ``fix``."""
    with torch.serialization.safe_globals(NUMPY_GLOBALS):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            try:  # reads the pickle's opcodes without running them
                names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            except Exception:  # the damage that stopped torch.load
                names = []
            if names:
                raise CheckpointError(
                    path, f"holds pickled Python objects, not only tensors and plain data "
                    f"({', '.join(sorted(names))}); glimpse does not load them, since "
                    f"unpickling can run any code", fix
                ) from None  # fmt: skip
            raise CheckpointError(path, f"is damaged ({first_sentence(error)})", fix) from error
        except Exception as error:  # torch raises several types for a truncated or corrupted file
            raise CheckpointError(
                path, f"is damaged (truncated or corrupted: {first_sentence(error)})", fix
            ) from error


def first_sentence(error: Exception) -> str:
    """``Type: the first sentence of the message`` (torch adds paragraphs of advice)."""
    text = str(error).strip().split("\n", 1)[0].split(". ", 1)[0].rstrip(".")
    return f"{type(error).__name__}: {text}"


def evaluation_fix(checkpoint: str) -> str:
    """What to do when ``checkpoint`` (``best`` or ``last``) of a run cannot be evaluated."""
    other = "last" if checkpoint == "best" else "best"
    return (
        f"Evaluate the run's other checkpoint with --checkpoint {other} if it kept one, or "
        "train the run again."
    )


def load_checkpoint(path: Path, fix: str = TRAIN_AGAIN) -> dict[str, Any]:
    """A checkpoint's tensors and plain data (:func:`load_tensors`), or a
    :class:`CheckpointError` that ends with ``fix`` when it is missing, damaged or not ours."""
    if not path.is_file():
        raise CheckpointError(path, "does not exist", fix)
    checkpoint = load_tensors(path, fix)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise CheckpointError(path, "is not a glimpse checkpoint (no model weights in it)", fix)
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
        """``checkpoints/<kind><suffix>``: ``last``, ``previous`` or ``best``, ``.pt`` or SB3's
        ``.zip``."""
        return self.path / "checkpoints" / f"{kind}{suffix}"

    def refuse_overwrite(self) -> None:
        """A new run never overwrites an old one (checked before anything is loaded)."""
        if (self.path / "checkpoints").exists():
            raise ConfigError(
                f"{self.path} already holds a run. Continue it with --resume, or pick another "
                "--name."
            )

    def start(self, config: dict[str, Any]) -> None:
        """Makes the folder and writes ``config.json``: called by the training loops once the
        run can start (data loaded, model built, any saved state read back)."""
        if distributed.is_main():  # checkpoints/ comes with the first checkpoint
            self.path.mkdir(parents=True, exist_ok=True)
            text = json.dumps(config, indent=2) + "\n"
            atomic_write(self.config_path, lambda tmp: tmp.write_text(text))

    def save_training_state(self, suffix: str, write: Callable[[Path], None]) -> Path:
        """``write(tmp)`` the full training state, then make it ``checkpoints/last<suffix>``,
        the one it replaces becoming ``previous<suffix>``: each rename is atomic, so a crash
        leaves ``last`` whole or missing, never half written, and ``previous`` whole."""
        last, previous = self.checkpoint("last", suffix), self.checkpoint("previous", suffix)
        last.parent.mkdir(parents=True, exist_ok=True)
        partial = last.with_name(f"last.partial{suffix}")
        write(partial)
        if last.exists():
            os.replace(last, previous)
        os.replace(partial, last)
        return last

    def load_training_state(
        self, suffix: str, load: Callable[[Path], T]
    ) -> tuple[T, CheckpointError | None]:
        """``load(checkpoints/last<suffix>)``; where that raises a :class:`CheckpointError` and
        ``previous<suffix>`` exists, ``load`` of that one. Returns the state and the error of
        ``last`` when it fell back (for :meth:`resuming`)."""
        last, previous = self.checkpoint("last", suffix), self.checkpoint("previous", suffix)
        try:
            return load(last), None
        except CheckpointError as damaged:
            if not previous.is_file():
                raise
            return load(previous), damaged

    def resuming(self, where: str, damaged: CheckpointError | None, suffix: str) -> None:
        """Says on stderr where the run resumes (``where``: epoch and batch, or step), and
        from which checkpoint when ``last`` was ``damaged``."""
        if not distributed.is_main():
            return
        if damaged is None:
            print(f"glimpse: resuming {self.path} at {where}", file=sys.stderr)
            return
        last = damaged.path.relative_to(self.path)
        previous = self.checkpoint("previous", suffix).relative_to(self.path)
        print(
            f"glimpse: {last} {damaged.problem}; resuming {self.path} from {previous} at {where}",
            file=sys.stderr,
        )

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
        """Writes ``test.json``, deletes the ``previous`` checkpoints (a finished run resumes
        nowhere, and they would double its size), and returns ``summary``."""
        self.close()
        self.test_path.write_text(json.dumps(summary, indent=2) + "\n")
        for previous in (self.path / "checkpoints").glob("previous.*"):
            previous.unlink()
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


def metrics_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The lines of a run's ``metrics.jsonl``, one per validation, in the order written."""
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
    return rows


def validation_curve(run_dir: Path) -> tuple[str, dict[int, float]]:
    """A run's validation error (%) by ``"epoch"`` (RAM, baselines) or ``"steps"`` (PPO).

    Read from the run's ``metrics.jsonl``, one line per validation; a resumed run's repeated
    line for the same epoch counts once (the later one).
    """
    rows = metrics_rows(run_dir)
    axis = "epoch" if not rows or "epoch" in rows[0] else "steps"
    try:
        return axis, {int(row[axis]): float(row["val_error"]) for row in rows}
    except KeyError as missing:
        raise ConfigError(
            f"A line of {run_dir / 'metrics.jsonl'} has no {missing}: it is not a glimpse "
            f"metrics file (each line needs {axis!r} and 'val_error'); name a run directory "
            "written by `glimpse train`."
        ) from None
