"""The training loop and the run directory, for any agent that implements :class:`Learner`.

A run directory holds everything about one training run::

    runs/<name>/
      config.json            the resolved configuration (edit it and pass it back with --config)
      metrics.jsonl          one line per validation: epoch, images, seconds, losses, val error
      tb/                    TensorBoard event files
      checkpoints/last.pt    full training state, written atomically after every epoch
      checkpoints/best.pt    the model with the lowest validation error (small: weights only)
      test.json              test error of the best model, written when training ends

With ``--ema-decay D`` the trainer also keeps an exponential moving average of the weights
(:class:`WeightAverage`), and validates, keeps as ``best.pt`` and tests that average instead
of the last step's weights; ``metrics.jsonl`` then also logs ``val_error_raw``, the last
step's weights on the same validation canvases, so one run compares the two epoch by epoch.

``--resume`` reloads ``last.pt`` (model, optimiser, learning-rate schedule, torch RNG and the
learner's data stream) and continues from the batch where it stopped, so an interrupted run
ends with the same metrics as an uninterrupted one. Ctrl-C or SIGTERM checkpoints the current
batch and exits; a non-finite loss stops the run without overwriting the last good checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from agents import distributed
from glimpse.config import check_at_least, check_fields, check_positive, option
from glimpse.errors import ConfigError, GlimpseError

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("linear", "cosine", "constant")
RUNTIME_SETTINGS = ("threads", "device")
"""Training settings for where and how fast a run trains, which a resumed run may change."""
RESULT_NEUTRAL_SETTINGS = frozenset({*RUNTIME_SETTINGS, "name", "runs_dir"})
"""Training settings that do not change what a run learns: the runtime ones and where the run
directory lies. A run resumed or reused by ``glimpse compare`` may differ in these."""


class TrainingError(GlimpseError):
    """Training cannot go on (a non-finite loss, a checkpoint that does not fit the run)."""


def adam_kwargs() -> dict[str, Any]:
    """Keyword arguments for every agent's Adam (RAM, baselines, SB3 policies): the fused kernel
    where this torch has it (2.4 or later on a CPU).

    The same algorithm as the default Adam, updating all parameters in one kernel instead of a
    loop over them: several times faster per update on a CPU.
    """
    try:
        torch.optim.Adam([torch.zeros(1, requires_grad=True)], fused=True)
    except (RuntimeError, TypeError):  # torch without a fused CPU Adam
        return {}
    return {"fused": True}


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped training after the state was checkpointed."""


@dataclass(frozen=True)
class TrainConfig:
    """How long and how fast to train, and where the run lives (PPO has its own --ppo-*)."""

    epochs: int = option(100, "RAM: training epochs.")
    epoch_size: int | None = option(
        None, "RAM: episodes per epoch; default: the train split's size."
    )
    batch_size: int = option(128, "RAM: episodes per gradient step.")
    optimizer: str = option("adam", "RAM: optimiser.", OPTIMIZERS)
    lr: float = option(1e-3, "RAM: initial learning rate.")
    momentum: float = option(0.9, "sgd: momentum (the paper's 0.9).")
    lr_schedule: str = option(
        "cosine", "RAM: learning-rate decay over the run (the paper: linear).", SCHEDULES
    )
    final_lr_fraction: float = option(0.02, "RAM: learning rate at the end, as a share of --lr.")
    reinforce_weight: float = option(1.0, "RAM: weight of the REINFORCE term in the hybrid loss.")
    location_lr_factor: float = option(
        1.0, "RAM: the location network's learning rate as a share of --lr (Adam moves each "
        "weight by about the learning rate, however noisy REINFORCE's gradient is)."
    )  # fmt: skip
    rollouts_per_image: int = option(
        1, "RAM: episodes of each training image in a batch (K, dividing --batch-size); K > 1 "
        "measures REINFORCE's advantage against the mean reward of the image's other K - 1 "
        "episodes instead of the learned baseline."
    )  # fmt: skip
    seed: int = option(1, "Seed of the model initialisation and of the training episodes.")
    device: str = option("auto", "auto (cuda if available), cpu or cuda.", ("auto", "cpu", "cuda"))
    threads: int = option(
        0, "torch CPU threads; 0: every core (use 1 when other processes share the cores)."
    )
    ema_decay: float = option(
        0.0, "RAM and the full-view baselines: validate, keep and test an exponential moving "
        "average of the weights, updated after every step with this decay (0.999: about the "
        "last 1,000 steps); 0: the weights of the last step."
    )  # fmt: skip
    eval_episodes: int = option(1000, "Episodes run together when evaluating.")
    track_test: bool = option(
        False, "Also log the test error after every epoch (learning curves; one test pass each)."
    )
    runs_dir: str = option("runs", "Folder that holds the run directories.")
    name: str | None = option(None, "Run directory name; default <env>-<agent>-seed<seed>.")

    def __post_init__(self) -> None:
        check_fields(self)
        check_at_least(
            self, 1, "epochs", "epoch_size", "batch_size", "eval_episodes", "rollouts_per_image"
        )
        check_at_least(self, 0, "momentum", "final_lr_fraction", "threads")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(
                f"ema_decay={self.ema_decay} must be at least 0 and below 1 (0.999: an average "
                f"over about the last 1,000 steps; 0: off)."
            )
        check_positive(self, "lr", "location_lr_factor")
        if self.batch_size % self.rollouts_per_image:
            raise ConfigError(
                f"batch_size={self.batch_size} is not a multiple of rollouts_per_image="
                f"{self.rollouts_per_image}; choose a batch size that K divides."
            )


class Learner(Protocol):
    """What the trainer needs from an agent."""

    model: nn.Module

    @property
    def train_size(self) -> int:
        """Images in the training split (an epoch shows as many episodes by default)."""

    def loss(self, batch_size: int, progress: float = 0.0) -> dict[str, torch.Tensor]:
        """Loss terms on a fresh training batch; ``total`` is minimised. ``progress`` is the
        share of the run's batches done, in ``[0, 1]``, for schedules other than the learning
        rate's."""

    def validation_error(self) -> float:
        """Error in percent on the fixed validation split."""

    def test_error(self) -> float:
        """Error in percent on the fixed test split."""

    def data_state(self) -> dict[str, Any]:
        """Where the training data stream stands (for resume)."""

    def load_data_state(self, state: dict[str, Any]) -> None:
        """Restores :meth:`data_state`."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available.")
    return torch.device(name)


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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


def load_model_weights(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Loads weights, turning a shape or key mismatch into a clear error."""
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise TrainingError(
            f"The weights in {source} do not fit the model built from the configuration "
            f"(different sizes or parts). Use the config.json saved with that checkpoint. "
            f"Details: {str(error).splitlines()[0]}"
        ) from error


def parameter_groups(model: nn.Module, lr: float, location_lr_factor: float) -> list[dict]:
    """The optimiser's parameter groups: with ``location_lr_factor != 1``, the location network
    of a model that has one (``model.locator``, RAM's) at ``lr * location_lr_factor`` and the
    rest at ``lr``; otherwise one group (as runs saved before the option had)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    locator = getattr(model, "locator", None)
    if locator is None or location_lr_factor == 1.0:
        return [{"params": trainable, "lr": lr}]
    located = {id(p) for p in locator.parameters()}
    return [
        {"params": [p for p in trainable if id(p) not in located], "lr": lr},
        {"params": [p for p in trainable if id(p) in located], "lr": lr * location_lr_factor},
    ]


def learning_rate_factor(schedule: str, progress: float, final_fraction: float) -> float:
    """Multiplier of the initial learning rate at ``progress`` in ``[0, 1]`` of the run."""
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - (1.0 - final_fraction) * progress
    return final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WeightAverage:
    """An exponential moving average of a model's parameters, and a way to evaluate with it.

    After step ``n`` (counting from 1) every average moves towards its parameter by
    ``1 - d_n``, with ``d_n = min(decay, (1 + n) / (10 + n))``: the short memory of the first
    steps keeps the average from dwelling on the random initial weights. One fused ``lerp``
    per step for all parameters.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.averages = [p.detach().clone() for p in self.parameters]
        self.steps = 0

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        torch._foreach_lerp_(self.averages, self.parameters, 1.0 - decay)  # no_grad: no detach

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averages inside the block, its own weights again after it."""
        with torch.no_grad():
            own = [p.detach().clone() for p in self.parameters]
            torch._foreach_copy_(self.parameters, self.averages)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.parameters, own)

    def state_dict(self) -> dict[str, Any]:
        return {"averages": self.averages, "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self.averages, state["averages"])
        self.steps = state["steps"]


@contextlib.contextmanager
def interrupt_requests() -> Iterator[list[str]]:
    """Turns Ctrl-C and SIGTERM into a flag the loop checks between batches."""
    requested: list[str] = []

    def handler(signum: int, frame: object) -> None:
        requested.append(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Trainer:
    """Trains a :class:`Learner` in ``run_dir``; see the module docstring."""

    def __init__(
        self,
        learner: Learner,
        config: TrainConfig,
        run_dir: Path,
        full_config: dict[str, Any],
        device: torch.device,
        progress: bool = True,
    ) -> None:
        self.learner, self.config, self.run_dir = learner, config, run_dir
        self.full_config, self.device, self.progress = full_config, device, progress
        self.model = learner.model
        params = parameter_groups(self.model, config.lr, config.location_lr_factor)
        if config.optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=config.lr, momentum=config.momentum, foreach=True
            )
        else:
            self.optimizer = torch.optim.Adam(params, lr=config.lr, **adam_kwargs())
        # Under torchrun each process runs its share of the epoch.
        epoch_size = math.ceil((config.epoch_size or learner.train_size) / distributed.world_size())
        self.batches_per_epoch = max(1, math.ceil(epoch_size / config.batch_size))
        self.total_batches = config.epochs * self.batches_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: learning_rate_factor(
                config.lr_schedule, min(step / self.total_batches, 1.0), config.final_lr_fraction
            ),
        )
        self.average = WeightAverage(self.model, config.ema_decay) if config.ema_decay else None
        self.epoch, self.batch = 0, 0  # next batch to run
        self.best_val_error, self.best_epoch = math.inf, -1
        self.seconds = 0.0  # training time so far, across resumes
        self.epoch_sums: dict[str, float] = {}  # loss terms summed over the epoch so far

    # -- files ----------------------------------------------------------------------------

    @property
    def last_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "checkpoints" / "best.pt"

    def save_last(self) -> None:
        if not distributed.is_main():
            return
        atomic_save(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "data": self.learner.data_state(),
                "epoch": self.epoch,
                "batch": self.batch,
                "best_val_error": self.best_val_error,
                "best_epoch": self.best_epoch,
                "seconds": self.seconds,
                "epoch_sums": self.epoch_sums,
                "average": self.average.state_dict() if self.average else None,
                "config": self.full_config,
            },
            self.last_path,
        )

    def resume(self) -> None:
        """Restores the state saved by :meth:`save_last`."""
        checkpoint = load_checkpoint(self.last_path)
        if _what_it_learns(checkpoint.get("config", {})) != _what_it_learns(self.full_config):
            raise TrainingError(
                f"{self.last_path} was written by a run with a different configuration than "
                f"the one given now. Resume with the run's own settings (glimpse train --resume "
                f"{self.run_dir}), or start a new run under another --name."
            )
        load_model_weights(self.model, checkpoint["model"], self.last_path)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        torch.set_rng_state(checkpoint["torch_rng"])
        self.learner.load_data_state(checkpoint["data"])
        self.epoch, self.batch = checkpoint["epoch"], checkpoint["batch"]
        self.best_val_error, self.best_epoch = (
            checkpoint["best_val_error"],
            checkpoint["best_epoch"],
        )
        self.seconds = checkpoint["seconds"]
        self.epoch_sums = checkpoint["epoch_sums"]
        if self.average is not None:
            self.average.load_state_dict(checkpoint["average"])

    def _log_metrics(self, record: dict[str, Any], writer: Any) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if isinstance(value, float) and key not in ("epoch", "seconds"):
                writer.add_scalar(key, value, record["images"])

    # -- the loop ---------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Runs the remaining epochs; returns the final summary (also in ``test.json``)."""
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        config = self.config
        main = distributed.is_main()
        writer = SummaryWriter(str(self.run_dir / "tb")) if main else None
        bar = tqdm(
            total=self.total_batches,
            initial=self.epoch * self.batches_per_epoch + self.batch,
            unit="batch",
            disable=not (self.progress and main),
            dynamic_ncols=True,
        )
        try:
            with interrupt_requests() as interrupted:
                while self.epoch < config.epochs:
                    start = epoch_start = time.perf_counter()
                    first_batch = self.batch
                    while self.batch < self.batches_per_epoch:
                        try:
                            terms = self._train_step(interrupted)
                        finally:
                            self.seconds += time.perf_counter() - start
                            start = time.perf_counter()
                        for key, value in terms.items():
                            self.epoch_sums[key] = self.epoch_sums.get(key, 0.0) + value
                        self.batch += 1
                        bar.update(1)
                    elapsed = time.perf_counter() - epoch_start
                    images_per_s = (self.batch - first_batch) * config.batch_size / elapsed
                    images_per_s *= distributed.world_size()
                    self.epoch, self.batch = self.epoch + 1, 0
                    if not distributed.is_main():  # process 0 evaluates and writes files
                        self.epoch_sums = {}
                        distributed.barrier()
                        continue
                    validation = self._validate()
                    sums, self.epoch_sums = self.epoch_sums, {}
                    record = {
                        "epoch": self.epoch,
                        "images": self.epoch
                        * self.batches_per_epoch
                        * config.batch_size
                        * distributed.world_size(),
                        "seconds": round(self.seconds, 2),
                        "lr": self.scheduler.get_last_lr()[0],
                        **validation,
                        "images_per_s": images_per_s,
                        **{f"train_{k}": v / self.batches_per_epoch for k, v in sums.items()},
                    }
                    self._log_metrics(record, writer)
                    self.save_last()
                    distributed.barrier()
                    bar.set_postfix(
                        val_err=f"{validation['val_error']:.2f}%", img_s=f"{images_per_s:,.0f}"
                    )
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        return self.finish() if main else {}

    def _train_step(self, interrupted: list[str]) -> dict[str, float]:
        """One gradient step, unless a process was interrupted or got a non-finite loss."""
        # Checked before the batch is drawn, so the saved state has consumed nothing of it.
        if distributed.any_process([bool(interrupted)])[0]:
            self.save_last()
            raise TrainingInterrupted(
                f"{interrupted[0] if interrupted else 'another process'} at epoch "
                f"{self.epoch + 1}, batch {self.batch}: the state is saved in "
                f"{self.last_path}. Continue with: glimpse train --resume {self.run_dir}"
            )
        self.model.train()
        done = self.epoch * self.batches_per_epoch + self.batch
        terms = self.learner.loss(self.config.batch_size, done / self.total_batches)
        total = terms["total"]
        if distributed.any_process([not bool(torch.isfinite(total))])[0]:
            raise TrainingError(
                f"The loss became {total.item()} at epoch {self.epoch + 1}, batch {self.batch}. "
                f"Training stopped; {self.last_path} still holds the last good state. Lower "
                f"--lr (now {self.config.lr}) and resume, or start again."
            )
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.scheduler.step()
        if self.average is not None:
            self.average.update()
        return {k: float(v.detach()) for k, v in terms.items()}

    def _validate(self) -> dict[str, float]:
        """The epoch's validation error (and test error, with ``track_test``) of the weights
        :meth:`_evaluated_weights` gives, with the last step's as ``val_error_raw`` where that
        is the average; keeps ``best.pt``."""
        raw = self.learner.validation_error() if self.average is not None else None
        with self._evaluated_weights():
            val_error = self.learner.validation_error()
            errors = {"val_error": val_error}
            if raw is not None:
                errors["val_error_raw"] = raw
            if val_error < self.best_val_error:
                self.best_val_error, self.best_epoch = val_error, self.epoch
                atomic_save(
                    {"model": self.model.state_dict(), "config": self.full_config,
                     "epoch": self.epoch, "val_error": val_error},
                    self.best_path,
                )  # fmt: skip
            if self.config.track_test:
                errors["test_error"] = self.learner.test_error()
        return errors

    def _evaluated_weights(self) -> contextlib.AbstractContextManager[None]:
        """The weights that validation judges and ``best.pt`` keeps: the average, if kept."""
        return self.average.applied() if self.average is not None else contextlib.nullcontext()

    def finish(self) -> dict[str, Any]:
        """Tests the best model and writes ``test.json``."""
        best = load_checkpoint(self.best_path)
        load_model_weights(self.model, best["model"], self.best_path)
        summary = {
            "test_error": self.learner.test_error(),
            "best_val_error": self.best_val_error,
            "best_epoch": self.best_epoch,
            "epochs": self.epoch,
            "train_seconds": round(self.seconds, 1),
        }
        (self.run_dir / "test.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def config_dict(**sections: Any) -> dict[str, Any]:
    """A JSON-ready configuration: dataclasses become dicts."""
    return {k: asdict(v) if hasattr(v, "__dataclass_fields__") else v for k, v in sections.items()}


def _what_it_learns(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without the :data:`RESULT_NEUTRAL_SETTINGS`."""
    train = config.get("train", {})
    return {
        **config,
        "train": {k: v for k, v in train.items() if k not in RESULT_NEUTRAL_SETTINGS},
    }


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
