"""The training loop of the agents trained by gradient steps over epochs (RAM and the full-view
baselines), for any agent that implements :class:`Learner`.

:class:`Trainer` runs epochs of batches, validates after each on the fixed validation split,
and writes through a :class:`glimpse.agents.run_directory.RunDirectory`: ``checkpoints/last.pt``
(model, optimiser, learning-rate schedule, torch RNG and the learner's data stream, after every
epoch; tensors and plain data only, so that loading it runs no code), ``checkpoints/previous.pt``
(the one before, until the run ends), ``checkpoints/best.pt`` (the best validated weights, with the
config, epoch and validation error; no optimiser state), ``metrics.jsonl``,
TensorBoard and ``test.json``. It knows nothing of any agent's model: the learner gives the
loss, its parameter groups and its errors.

With ``--ema-decay D`` the trainer also keeps an exponential moving average of the weights
(:class:`WeightAverage`), and validates, keeps as ``best.pt`` and tests that average instead
of the last step's weights; ``metrics.jsonl`` then also logs ``val_error_raw``, the last
step's weights on the same validation canvases, so one run compares the two epoch by epoch.

``--resume`` reloads ``last.pt`` (``previous.pt`` where ``last.pt`` is damaged) and continues
from the batch where it stopped, so an interrupted run ends with the same metrics as an
uninterrupted one. Ctrl-C or SIGTERM checkpoints the current batch and exits; a non-finite loss
stops the run without overwriting the last good checkpoint.

``--init-from RUN`` starts a new run from another run's trained weights (its ``best.pt``) instead
of a random initialisation: a curriculum, such as RAM trained on translated canvases before
cluttered ones. Only the weights come over (the optimiser, the schedule and the epochs start
afresh), so the two models must have the same shapes; their other settings (the reward, the
learning rate) may differ. The source is recorded in the run's ``config.json`` like any setting,
and ``--resume`` continues from the run's own checkpoint, not from the source.

Next on the way down: each batch's loss comes from the learner, RAM's in
:meth:`glimpse.agents.learners.RAMLearner.loss`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from glimpse.agents import distributed
from glimpse.agents.run_directory import (
    RESUME_FIX,
    RunDirectory,
    TrainingError,
    atomic_save,
    interrupt_requests,
    load_checkpoint,
)
from glimpse.config import check_at_least, check_fields, check_positive, option
from glimpse.errors import ConfigError

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("linear", "cosine", "constant")


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


@dataclass(frozen=True)
class TrainConfig:
    """How long and how RAM and the full-view baselines train: epochs, batches, optimiser,
    and the weights they start from."""

    epochs: int = option(100, "Training epochs.")
    epoch_size: int | None = option(None, "Episodes per epoch; default: the train split's size.")
    batch_size: int = option(128, "Episodes (images) per gradient step.")
    optimizer: str = option("adam", "Optimiser.", OPTIMIZERS)
    lr: float = option(1e-3, "Initial learning rate.")
    momentum: float = option(0.9, "sgd: momentum (the paper's 0.9).")
    lr_schedule: str = option(
        "cosine", "Learning-rate decay over the run (the paper: linear).", SCHEDULES
    )
    final_lr_fraction: float = option(0.02, "Learning rate at the end, as a share of --lr.")
    ema_decay: float = option(
        0.0, "Validate, keep and test an exponential moving average of the weights, updated "
        "after every step with this decay (0.999: about the last 1,000 steps); 0: the weights "
        "of the last step."
    )  # fmt: skip
    max_grad_norm: float = option(
        0.0, "Clip the gradients' global norm to this before each step (torch's "
        "clip_grad_norm_, as SB3's max_grad_norm; tfRAM clips at 5); 0: no clipping."
    )  # fmt: skip

    init_from: str | None = option(
        None, "Start from the weights of another run instead of a random initialisation (a "
        "curriculum): its folder (its checkpoints/best.pt) or a .pt checkpoint; the models must "
        "have the same shapes."
    )  # fmt: skip

    def __post_init__(self) -> None:
        check_fields(self)
        check_at_least(self, 1, "epochs", "epoch_size", "batch_size")
        check_at_least(self, 0, "momentum", "final_lr_fraction", "max_grad_norm")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(
                f"ema_decay={self.ema_decay} must be at least 0 and below 1 (0.999: an average "
                f"over about the last 1,000 steps; 0: off)."
            )
        check_positive(self, "lr")


class Learner(Protocol):
    """What the trainer needs from an agent."""

    model: nn.Module

    @property
    def train_size(self) -> int:
        """Images in the training split (an epoch shows as many episodes by default)."""

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """The optimiser's parameter groups, at learning rate ``lr`` unless the agent says
        otherwise for some of its parameters."""

    def loss(self, batch_size: int, progress: float = 0.0) -> dict[str, torch.Tensor]:
        """Loss terms on a fresh training batch of ``batch_size`` episodes or images (the
        training config's; RAM's learner builds its episodes of that size at construction and
        checks that they match); ``total`` is minimised. ``progress`` is the
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


def load_model_weights(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    source: Path,
    fix: str = "Use the config.json saved with that checkpoint.",
) -> None:
    """Loads weights, turning a shape or key mismatch into a clear error that ends with
    ``fix``."""
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise TrainingError(
            f"The weights in {source} do not fit the model built from the configuration "
            f"(different sizes or parts). {fix} Details: {str(error).splitlines()[0]}"
        ) from error


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


class Trainer:
    """Trains a :class:`Learner` into a :class:`RunDirectory`; see the module docstring."""

    def __init__(
        self,
        learner: Learner,
        train_config: TrainConfig,
        run: RunDirectory,
        run_config: dict[str, Any],
        progress: bool = True,
        track_test: bool = False,
    ) -> None:
        self.learner, self.train_config, self.run = learner, train_config, run
        self.run_config, self.progress, self.track_test = run_config, progress, track_test
        config = train_config
        self.model = learner.model
        params = learner.parameter_groups(config.lr)
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

    @property
    def last_path(self) -> Path:
        return self.run.checkpoint("last")

    @property
    def best_path(self) -> Path:
        return self.run.checkpoint("best")

    def save_last(self) -> None:
        """Saves the full training state as ``last.pt`` (the one before becomes
        ``previous.pt``)."""
        if not distributed.is_main():
            return
        state = {
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
            "config": self.run_config,
        }
        self.run.save_training_state(".pt", lambda tmp: torch.save(state, tmp))

    def resume(self) -> None:
        """Restores the state saved by :meth:`save_last` (from ``previous.pt`` where
        ``last.pt`` is damaged), refusing one that a run with other settings saved."""
        checkpoint, damaged = self.run.load_training_state(
            ".pt", lambda path: load_checkpoint(path, RESUME_FIX)
        )
        source = self.run.checkpoint("previous" if damaged else "last")
        self._check_settings(checkpoint.get("config"), source)
        load_model_weights(self.model, checkpoint["model"], source)
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
        where = (
            f"epoch {self.epoch + 1} of {self.train_config.epochs}, batch {self.batch} of "
            f"{self.batches_per_epoch}"
        )
        self.run.resuming(where, damaged, ".pt")

    def start_from(self, source: str) -> None:
        """Loads the weights of another run (``source``: its folder, whose ``best.pt`` is
        read, or a ``.pt`` checkpoint) into the model before the first step."""
        path = Path(source)
        if path.is_dir():
            path = path / "checkpoints" / "best.pt"
        fix = (
            "Check --init-from: it names a run folder (its checkpoints/best.pt is read) or a .pt "
            "checkpoint, relative to the folder you run glimpse from."
        )
        load_model_weights(
            self.model, load_checkpoint(path, fix)["model"], path,
            "Start from a run with the same networks, glimpse shape and classes.",
        )  # fmt: skip
        if self.average is not None:  # the average starts from the weights it now holds
            self.average = WeightAverage(self.model, self.train_config.ema_decay)
        if distributed.is_main():
            print(f"glimpse: starting from the weights of {path}")

    def _check_settings(self, stored: dict[str, Any] | None, source: Path) -> None:
        """Refuses a checkpoint saved with settings that change what the run learns."""
        from glimpse.agents.runs import config_differences, migrate_config

        differences = config_differences(migrate_config(stored), self.run_config) if stored else []
        if differences:
            raise TrainingError(
                f"{source} was written by a run with other settings than "
                f"{self.run.config_path} ({'; '.join(differences)}). Resume with the run's own "
                "settings, or start a new run under another --name."
            )

    # -- the loop ---------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Runs the remaining epochs; returns the final summary (also in ``test.json``)."""
        from tqdm import tqdm

        main = distributed.is_main()
        self.run.start(self.run_config)
        bar = tqdm(
            total=self.total_batches,
            initial=self.epoch * self.batches_per_epoch + self.batch,
            unit="batch",
            disable=not (self.progress and main),
            dynamic_ncols=True,
        )
        try:
            with interrupt_requests() as interrupted:
                while self.epoch < self.train_config.epochs:
                    images_per_s = self._run_epoch(interrupted, bar)
                    self.epoch, self.batch = self.epoch + 1, 0
                    if not main:  # process 0 evaluates and writes files
                        self.epoch_sums = {}
                        distributed.barrier()
                        continue
                    val_error = self._end_epoch(images_per_s)
                    distributed.barrier()
                    bar.set_postfix(val_err=f"{val_error:.2f}%", img_s=f"{images_per_s:,.0f}")
        finally:
            bar.close()
            self.run.close()
        return self.finish() if main else {}

    def _run_epoch(self, interrupted: list[str], bar: Any) -> float:
        """Trains the current epoch's remaining batches, adding their loss terms to
        ``epoch_sums``; returns the images per second (all processes together)."""
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
        images_per_s = (self.batch - first_batch) * self.train_config.batch_size / elapsed
        return images_per_s * distributed.world_size()

    def _end_epoch(self, images_per_s: float) -> float:
        """Validates the epoch just trained, logs its record to ``metrics.jsonl`` and saves
        ``last.pt``; returns the validation error."""
        validation = self._validate()
        sums, self.epoch_sums = self.epoch_sums, {}
        images = self.epoch * self.batches_per_epoch * self.train_config.batch_size
        record = {
            "epoch": self.epoch,
            "images": images * distributed.world_size(),
            "seconds": round(self.seconds, 2),
            "lr": self.scheduler.get_last_lr()[0],
            **validation,
            "images_per_s": images_per_s,
            **{f"train_{k}": v / self.batches_per_epoch for k, v in sums.items()},
        }
        self.run.log(record, step="images")
        self.save_last()
        return validation["val_error"]

    def _train_step(self, interrupted: list[str]) -> dict[str, float]:
        """One gradient step, unless a process was interrupted or got a non-finite loss."""
        # Checked before the batch is drawn, so the saved state has consumed nothing of it.
        if distributed.any_process([bool(interrupted)])[0]:
            self.save_last()
            raise self.run.interrupted(
                interrupted[0] if interrupted else "another process",
                f"epoch {self.epoch + 1}, batch {self.batch}",
                self.last_path,
            )
        self.model.train()
        done = self.epoch * self.batches_per_epoch + self.batch
        terms = self.learner.loss(self.train_config.batch_size, done / self.total_batches)
        total = terms["total"]
        if distributed.any_process([not bool(torch.isfinite(total))])[0]:
            raise TrainingError(
                f"The loss became {total.item()} at epoch {self.epoch + 1}, batch {self.batch}. "
                f"Training stopped; {self.last_path} still holds the last good state. Lower "
                f"--lr (now {self.train_config.lr}) and resume, or start again."
            )
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.train_config.max_grad_norm:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.train_config.max_grad_norm)
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
                    {"model": self.model.state_dict(), "config": self.run_config,
                     "epoch": self.epoch, "val_error": val_error},
                    self.best_path,
                )  # fmt: skip
            if self.track_test:
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
        return self.run.finish(summary)
