"""Hard-attention policies trained with PPO (Stable-Baselines3) and RecurrentPPO (sb3-contrib).

Both train on the batched glimpse episodes through :class:`glimpse.envs.sb3.GlimpseVecEnv`, by
default with the discrete action space (a cell of a G x G grid, and the class at the last step);
with
``--action-type continuous`` the policy is Gaussian over the next location and the class scores
(SB3 clips its samples to the action space, hence ``--score-bound``), which is what the
environment's ``--class-reward log-likelihood`` needs. The policy needs
memory of earlier glimpses: ``ppo`` gets it from the environment's ``history`` observation and
:class:`glimpse.agents.extractors.GlimpseHistoryExtractor`; ``recurrent-ppo`` from its LSTM on
top of
:class:`glimpse.agents.extractors.GlimpseFeaturesExtractor`.

``--advantage factored`` trains ``ppo`` with
:class:`glimpse.agents.factored_ppo.FactoredPPO`: the
class and the move of each action get advantages of their own; ``--move-credit expected``
credits the move with the expected rewards of the states it leads to, not the rewards that
later class samples happened to earn.

Settings are :class:`PPOConfig`'s fields (a run's ``model`` section); the published ones are
recipes (``glimpse recipes``). A PPO run directory is written by the same
:class:`glimpse.agents.run_directory.RunDirectory` as every other agent's, with SB3 ``.zip``
models: ``checkpoints/last.zip`` (saved at every validation, and when Ctrl-C or SIGTERM stops
training after the current step; ``--resume`` continues from its step count, or from
``previous.zip``, the one before, where ``last.zip`` is damaged) and ``checkpoints/best.zip``
(lowest validation error on the fixed validation split; float16 weights without the optimiser
state, about a sixth of the size), all written atomically.

An SB3 zip keeps its tensors in ``.pth`` files, which SB3 loads with ``weights_only=True``, and
the objects JSON cannot hold (spaces, schedules, classes, the last observations) pickled in its
``data`` file, which SB3 would unpickle, running any code they name. :func:`load_model` never
lets it: it rebuilds each of those from the run's settings or leaves it out.
"""

from __future__ import annotations

import collections
import io
import json
import pickle
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.utils import LinearSchedule

from glimpse.agents import distributed
from glimpse.agents.extractors import (
    GlimpseFeaturesExtractor,
    GlimpseHistoryExtractor,
    ScreenExtractor,
)
from glimpse.agents.factored_ppo import (
    MINIBATCHES,
    MOVE_CREDITS,
    NEEDS_DISCRETE_ACTIONS,
    FactoredPolicy,
    FactoredPPO,
)
from glimpse.agents.run_directory import (
    RESUME_FIX,
    TRAIN_AGAIN,
    CheckpointError,
    RunConfig,
    RunDirectory,
    atomic_write,
    evaluation_fix,
    first_sentence,
    interrupt_requests,
    resolve_device,
)
from glimpse.agents.trainer import adam_kwargs
from glimpse.config import check_at_least, check_fields, check_positive, option
from glimpse.envs.evaluation import TargetShare, Trajectories, evaluate, evaluation_episodes
from glimpse.envs.glimpse_env import task_of
from glimpse.envs.sb3 import GlimpseVecEnv, make_sb3_env
from glimpse.errors import ConfigError

ALGORITHMS = ("ppo", "recurrent-ppo")
ADVANTAGES = ("shared", "factored")
LR_SCHEDULES = ("constant", "linear")
GLIMPSE_SCALES = ("mean", "sum")


@dataclass(frozen=True)
class PPOConfig:
    """PPO's settings: its networks and how it learns (a run's ``model`` section)."""

    total_steps: int = option(2_000_000, "Environment steps to train for.")
    n_envs: int = option(64, "Episodes run in parallel (one batched environment).")
    n_steps: int = option(128, "Steps per episode slot per rollout.")
    batch_size: int = option(512, "Minibatch size of the PPO update.")
    n_epochs: int = option(4, "Passes over each rollout.")
    learning_rate: float = option(3e-4, "Adam learning rate (the initial one with a decay).")
    lr_schedule: str = option(
        "constant", "Learning rate over the run: constant, or linear decay to 0 at total_steps.",
        LR_SCHEDULES,
    )  # fmt: skip
    gamma: float = option(1.0, "Discount; 1 because the only reward is the final answer's.")
    gae_lambda: float = option(0.95, "GAE lambda.")
    ent_coef: float = option(0.01, "Entropy bonus.")
    clip_range: float = option(0.2, "PPO clipping.")
    features_dim: int = option(256, "Units of the glimpse network's output g_t.")
    history_pooling: str = option(
        "mean", "ppo: how the glimpses so far reach the policy: mean (of their features), max "
        "(their elementwise maximum), concat (the glimpses' slots side by side, so the policy "
        "knows which came when), or rnn (the paper's rectified core run over them in order).",
        GlimpseHistoryExtractor.POOLINGS,
    )  # fmt: skip
    glimpse_scales: str = option(
        "mean", "How the policy's glimpse network reads the coarser scales: mean (as the sensor "
        "gives them: a cell of scale k is the mean of s^2k pixels), or sum (scale k multiplied "
        "by s^2k, so one lit pixel reads 1 at every scale; in Catch the mean shows the ball at "
        "1/16 in the coarsest patch).", GLIMPSE_SCALES,
    )  # fmt: skip
    lstm_hidden_size: int = option(256, "recurrent-ppo: LSTM units.")
    head_units: int = option(
        64, "Units of each of the two hidden layers of the policy and of the value head (64: "
        "SB3's default)."
    )  # fmt: skip
    share_features_extractor: bool = option(
        True, "The policy and the value function read one glimpse network (SB3's default); "
        "off: each has its own, so the value loss does not shape the policy's features "
        "(twice the extractor's compute)."
    )  # fmt: skip
    vf_coef: float = option(0.5, "Weight of the value loss (SB3's default).")
    log_std_init: float = option(
        0.0, "continuous actions: the Gaussian policy's initial log standard deviation (SB3's "
        "default 0)."
    )  # fmt: skip
    eval_every: int = option(100_000, "Environment steps between validations and checkpoints.")
    advantage: str = option(
        "shared", "ppo: shared (PPO's: one GAE advantage for the whole action) or factored (the "
        "class judged by its own step's reward, the move by the rewards after it; "
        "agents/factored_ppo.py).", ADVANTAGES
    )  # fmt: skip
    minibatches: str = option(
        "steps", "factored: how each rollout is cut into minibatches: steps (shuffled one by "
        "one, as SB3 does) or episodes (whole episodes shuffled, so each glimpse is encoded "
        "once per minibatch, not once for every later step of its episode: faster).",
        MINIBATCHES,
    )  # fmt: skip
    move_credit: str = option(
        "rewards", "factored: what the move is credited with: the rewards that followed it, or "
        "expected (the expected rewards c(s) of the states that followed, without the luck of "
        "each later class sample).", MOVE_CREDITS,
    )  # fmt: skip

    def __post_init__(self) -> None:
        check_fields(self)
        check_at_least(self, 1, "total_steps", "n_envs", "n_steps", "n_epochs", "eval_every")
        check_at_least(self, 1, "features_dim", "lstm_hidden_size", "head_units")
        check_at_least(self, 2, "batch_size")  # SB3 normalises advantages per minibatch
        check_at_least(self, 0, "ent_coef", "vf_coef")
        check_positive(self, "learning_rate", "clip_range")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name}={getattr(self, name)} must lie between 0 and 1.")


def check_ppo_settings(algorithm: str, config: PPOConfig, env: dict[str, Any]) -> None:
    """Refuses, before a run directory is made, the whole screen for a policy without memory,
    a screen policy with ``--glimpse-scales`` other than mean (it has no glimpse network), and a
    factored advantage (or its minibatches or move credit) where it does not apply."""
    if env.get("screen") and algorithm != "recurrent-ppo":
        raise ConfigError(
            "--screen gives the policy the whole screen, which does not show which way the ball "
            "moves: train recurrent-ppo on it (its LSTM remembers the screens before)."
        )
    if env.get("screen") and config.glimpse_scales != "mean":
        raise ConfigError(
            "--glimpse-scales says how the glimpse network reads the glimpse; with --screen the "
            "policy reads the whole screen instead: leave --glimpse-scales out."
        )
    if config.advantage == "shared":
        if config.minibatches != "steps":
            raise ConfigError(
                "--minibatches episodes is for --advantage factored; SB3's PPO shuffles "
                "steps."
            )
        if config.move_credit != "rewards":
            raise ConfigError(
                "--move-credit expected is for --advantage factored; SB3's PPO credits "
                "the whole action with the rewards that follow it."
            )
        return
    if algorithm != "ppo":
        raise ConfigError(
            "--advantage factored is for glimpse train ppo; RecurrentPPO keeps its shared one."
        )
    settings = ppo_env_settings(algorithm, env)
    if settings["action_type"] != "discrete" or settings.get("allow_stop"):
        raise ConfigError(NEEDS_DISCRETE_ACTIONS)


def model_class(algorithm: str, advantage: str = "shared") -> type[BaseAlgorithm]:
    """The SB3 class that trains ``algorithm`` (``ppo``, ``recurrent-ppo``) with ``advantage``."""
    from sb3_contrib import RecurrentPPO
    from stable_baselines3 import PPO

    if algorithm == "recurrent-ppo":
        return RecurrentPPO
    return FactoredPPO if advantage == "factored" else PPO


def ppo_env_settings(algorithm: str, env: dict[str, Any]) -> dict[str, Any]:
    """Environment settings for PPO: the history observation for the non-recurrent one (its
    only memory), none for RecurrentPPO (its LSTM remembers)."""
    return {**env, "history": algorithm == "ppo"}


def learning_rate(config: PPOConfig) -> float | LinearSchedule:
    """SB3's ``learning_rate``: the rate, or its schedule (which SB3 evaluates on the share of
    total_steps still to go, counted across resumes)."""
    if config.lr_schedule == "linear":
        return LinearSchedule(config.learning_rate, 0.0, 1.0)
    return config.learning_rate


def build_model(
    algorithm: str, env: Any, config: PPOConfig, seed: int, device: str, tensorboard: str | None
) -> BaseAlgorithm:
    """A new SB3 model of ``algorithm`` on ``env`` (a :class:`GlimpseVecEnv`, or SB3 wrappers
    around one)."""
    cls = model_class(algorithm, config.advantage)
    common = {
        "n_steps": config.n_steps,
        "batch_size": config.batch_size,
        "n_epochs": config.n_epochs,
        "learning_rate": learning_rate(config),
        "gamma": config.gamma,
        "gae_lambda": config.gae_lambda,
        "ent_coef": config.ent_coef,
        "vf_coef": config.vf_coef,
        "clip_range": config.clip_range,
        "seed": seed,
        "device": device,
        "tensorboard_log": tensorboard,
        "verbose": 0,
    }
    kwargs = policy_kwargs(algorithm, config, env)
    if algorithm == "recurrent-ppo":
        return cls("MultiInputLstmPolicy", env, policy_kwargs=kwargs, **common)
    if config.advantage == "factored":
        return cls(FactoredPolicy, env, policy_kwargs=kwargs, minibatches=config.minibatches,
                   move_credit=config.move_credit, **common)  # fmt: skip
    return cls("MultiInputPolicy", env, policy_kwargs=kwargs, **common)


def policy_kwargs(algorithm: str, config: PPOConfig, env: Any) -> dict[str, Any]:
    """The SB3 policy's ``policy_kwargs`` for ``config`` on ``env`` (a :class:`GlimpseVecEnv`,
    or SB3 wrappers around one): our features extractor (the whole screen's,
    :class:`ScreenExtractor`, where the environment shows it, else a glimpse one reading the
    scales as ``config.glimpse_scales`` says, with the sensor's scale factor), the heads'
    sizes, fused Adam."""
    while not isinstance(env, GlimpseVecEnv):  # SB3's wrappers keep the env they wrap
        env = env.venv
    screen = "screen" in env.observation_space.spaces
    scale_factor = env.venv.episodes.sensor.scale_factor
    scale_gain = float(scale_factor**2) if config.glimpse_scales == "sum" else 1.0
    kwargs: dict[str, Any] = {
        "net_arch": {"pi": [config.head_units] * 2, "vf": [config.head_units] * 2},
        "optimizer_kwargs": adam_kwargs(),
        "log_std_init": config.log_std_init,
        "share_features_extractor": config.share_features_extractor,
    }
    if algorithm == "recurrent-ppo":
        extractor: type[BaseFeaturesExtractor] = GlimpseFeaturesExtractor
        extractor_kwargs: dict[str, Any] = {"features_dim": config.features_dim}
        if screen:
            extractor = ScreenExtractor
        else:
            extractor_kwargs["scale_gain"] = scale_gain
        return {**kwargs, "features_extractor_class": extractor,
                "features_extractor_kwargs": extractor_kwargs,
                "lstm_hidden_size": config.lstm_hidden_size}  # fmt: skip
    return {**kwargs, "features_extractor_class": GlimpseHistoryExtractor,
            "features_extractor_kwargs": {"features_dim": config.features_dim,
                                          "pooling": config.history_pooling,
                                          "scale_gain": scale_gain}}  # fmt: skip


def load_model(
    algorithm: str,
    config: PPOConfig,
    env_settings: dict[str, Any],
    path: Path,
    device: str = "auto",
    fix: str = TRAIN_AGAIN,
) -> BaseAlgorithm:
    """The SB3 model saved at ``path`` by a run of ``algorithm`` with ``config`` on the
    environment ``env_settings`` (the run's ``env`` section); a :class:`CheckpointError` that
    ends with ``fix`` where it cannot be loaded.

    Nothing in the zip is unpickled. The objects that SB3 would (see the module docstring) are
    rebuilt from the settings: the policy's class and ``policy_kwargs`` (so a model saved
    before a class moved, ``envs.sb3`` becoming ``glimpse.agents.extractors``, loads as well as
    a new one), the spaces, the learning rate and the clip range. The others (the last
    observations, the episode-info buffers, the rollout buffer's class, the learning-rate
    schedule) are left out; SB3 remakes them from the rest when training starts.
    """
    cls = model_class(algorithm, config.advantage)
    policy = {"recurrent-ppo": "MultiInputLstmPolicy", "ppo": "MultiInputPolicy"}[algorithm]
    env = GlimpseVecEnv(None, 1, **env_settings)  # for its spaces
    rebuilt = {
        "policy_kwargs": policy_kwargs(algorithm, config, env),
        "policy_class": (
            FactoredPolicy if config.advantage == "factored" else cls.policy_aliases[policy]
        ),
        "observation_space": env.observation_space,
        "action_space": env.action_space,
        "learning_rate": learning_rate(config),
        "clip_range": config.clip_range,
    }
    env.close()
    left_out = dict.fromkeys(_pickled_entries(path, fix))
    try:
        return cls.load(path, device=device, custom_objects={**left_out, **rebuilt})
    except Exception as error:  # SB3 raises several types for a damaged zip
        names = _unsafe_globals(path) if isinstance(error, pickle.UnpicklingError) else []
        if names:
            raise CheckpointError(
                path, f"holds pickled Python objects, not only tensors and plain data "
                f"({', '.join(names)}); glimpse does not load them, since unpickling can run "
                f"any code", fix
            ) from None  # fmt: skip
        raise CheckpointError(
            path, f"cannot be loaded ({first_sentence(error)}): it is damaged, or from another "
            "algorithm or other settings", fix
        ) from error  # fmt: skip


def _pickled_entries(path: Path, fix: str) -> list[str]:
    """The entries of an SB3 zip's ``data`` that SB3 would unpickle."""
    if not path.is_file():
        raise CheckpointError(path, "does not exist", fix)
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (OSError, zipfile.BadZipFile, KeyError, ValueError) as error:
        raise CheckpointError(
            path, f"is damaged (truncated or corrupted: {first_sentence(error)})", fix
        ) from error
    return [key for key, item in data.items() if isinstance(item, dict) and ":serialized:" in item]


def _unsafe_globals(path: Path) -> list[str]:
    """The classes and functions that the ``.pth`` files of an SB3 zip name beyond what
    ``torch.load(weights_only=True)`` allows, read without running them."""
    names: set[str] = set()
    with zipfile.ZipFile(path) as archive:
        for entry in archive.namelist():
            if entry.endswith(".pth"):
                data = io.BytesIO(archive.read(entry))
                names.update(torch.serialization.get_unsafe_globals_in_checkpoint(data))
    return sorted(names)


def save_model(model: BaseAlgorithm, path: Path, evaluation_only: bool = False) -> None:
    """:func:`write_model` through :func:`atomic_write` (a crash never leaves a truncated zip
    behind)."""
    atomic_write(path, lambda partial: write_model(model, partial, evaluation_only))


# Attributes SB3 would pickle into a zip that are large and that nothing reads back: the last
# batch of observations (2 MB at 100 x 100 with 256 environments). :func:`load_model` leaves
# them out, and ``--resume`` starts from fresh episodes (``set_env`` resets the environments).
NOT_SAVED = ["_last_obs", "_last_original_obs"]


def write_model(model: BaseAlgorithm, path: Path, evaluation_only: bool = False) -> None:
    """``model.save(path)`` without :data:`NOT_SAVED`, its files deflated (SB3 stores them
    uncompressed): a training zip of the 100 px policy is 3.5 MB instead of 5.8.

    ``evaluation_only=True`` keeps what evaluation, visualisation and fine-tuning need: the
    weights, stored in float16 (SB3 copies them back into the float32 policy on load), with an
    empty optimiser state (Adam's moments are two thirds of a full zip); about a sixth of the
    size. The live model is not touched.
    """
    optimizer = model.policy.optimizer
    moments = optimizer.state
    if evaluation_only:
        optimizer.state = collections.defaultdict(dict)
    try:
        model.save(path, exclude=NOT_SAVED)
    finally:
        optimizer.state = moments
    _deflate(path, float16_weights=evaluation_only)


def _deflate(zip_path: Path, float16_weights: bool) -> None:
    """Rewrites an SB3 zip with its files deflated; with ``float16_weights`` its ``policy.pth``
    holds float16 tensors (shared ones stay shared: SB3 lists one features extractor under
    several names)."""
    with zipfile.ZipFile(zip_path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    if float16_weights:
        state = torch.load(io.BytesIO(entries["policy.pth"]), weights_only=True)
        halved: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}
        for name, tensor in state.items():
            if tensor.is_floating_point():
                key = (tensor.data_ptr(), tuple(tensor.shape))
                if key not in halved:
                    halved[key] = tensor.half()
                state[name] = halved[key]
        buffer = io.BytesIO()
        torch.save(state, buffer)
        entries["policy.pth"] = buffer.getvalue()
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


class SB3Policy:
    """An SB3 model as an :class:`glimpse.envs.evaluation.Policy` (deterministic actions)."""

    def __init__(self, model: BaseAlgorithm) -> None:
        self.model = model

    def start(self, num_envs: int) -> None:
        self.state: Any = None
        self.episode_start = np.ones(num_envs, bool)

    def act(self, observations: dict[str, np.ndarray]) -> np.ndarray:
        actions, self.state = self.model.predict(
            observations, state=self.state, episode_start=self.episode_start, deterministic=True
        )
        self.episode_start[:] = False
        return actions


class ValidationCallback(BaseCallback):
    """Every ``eval_every`` steps: validation error on the fixed split, metrics, checkpoints."""

    def __init__(self, run: RunDirectory, env: dict[str, Any], eval_every: int, episodes: int,
                 track_test: bool, seconds: float, stop_requests: list[str]) -> None:  # fmt: skip
        super().__init__()
        self.stop_requests = stop_requests  # filled by Ctrl-C or SIGTERM (interrupt_requests)
        self.run, self.eval_every, self.track_test = run, eval_every, track_test
        self.val = evaluation_episodes(env, "val", episodes)
        self.test = evaluation_episodes(env, "test", episodes) if track_test else None
        self.best = run.best_validation_error()
        self.last_error = self.best  # the progress bar's, until the first validation
        self.seconds, self.started = seconds, time.perf_counter()
        self.next_eval = 0

    def _on_training_start(self) -> None:
        self.next_eval = (self.num_timesteps // self.eval_every + 1) * self.eval_every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_eval:
            self.next_eval += self.eval_every
            self.validate()
        return not self.stop_requests  # False ends SB3's learn() after this step

    def validate(self) -> None:
        seconds = self.seconds + time.perf_counter() - self.started
        error = evaluate(SB3Policy(self.model), self.val).error_percent
        self.last_error = error
        record: dict[str, Any] = {"steps": self.num_timesteps, "seconds": round(seconds, 1),
                                  "val_error": error}  # fmt: skip
        if self.test is not None:
            record["test_error"] = evaluate(SB3Policy(self.model), self.test).error_percent
        self.run.log(record, step="steps")
        if error < self.best:
            self.best = error
            save_model(self.model, self.run.checkpoint("best", ".zip"), evaluation_only=True)
        self.save_last()

    def save_last(self) -> None:
        """The model and training time so far (SB3 keeps the step count in the zip), as
        ``last.zip`` and ``last.json``; the ones before become ``previous.*``."""
        seconds = self.seconds + time.perf_counter() - self.started
        self.run.save_training_state(".zip", lambda partial: write_model(self.model, partial))
        text = json.dumps({"seconds": seconds}) + "\n"
        self.run.save_training_state(".json", lambda partial: partial.write_text(text))


class ProgressBar(BaseCallback):
    """A tqdm bar of the env steps towards ``total_steps``, with the latest validation error."""

    def __init__(self, total_steps: int, validation: ValidationCallback, enabled: bool) -> None:
        super().__init__()
        self.total_steps, self.validation, self.enabled = total_steps, validation, enabled
        self.shown_error = float("inf")  # none yet (a resumed run shows its best at once)

    def _on_training_start(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=self.total_steps, initial=self.num_timesteps, unit="step",
                        unit_scale=True, disable=not self.enabled, dynamic_ncols=True)  # fmt: skip

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        if self.validation.last_error != self.shown_error:
            self.shown_error = self.validation.last_error
            self.bar.set_postfix(val_err=f"{self.shown_error:.2f}%")
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


def train_ppo(
    config: dict[str, Any], run: RunDirectory, resume: bool, progress: bool = True
) -> dict[str, Any]:
    """Trains (or resumes) a PPO run; returns the summary written to ``test.json``."""
    if distributed.world_size() > 1:
        raise ConfigError("PPO runs in one process; run it without torchrun.")
    algorithm, ppo = config["agent"], PPOConfig(**config["model"])
    settings, env = RunConfig(**config["run"]), config["env"]
    device = str(resolve_device(settings.device))
    vec_env = make_sb3_env(None, ppo.n_envs, seed=settings.seed, **env)
    seconds = 0.0
    tensorboard = str(run.path / "tb")
    if resume:

        def load(path: Path) -> tuple[BaseAlgorithm, float]:
            """The model in ``path`` and the training time in the ``.json`` beside it."""
            saved = load_model(algorithm, ppo, env, path, device, RESUME_FIX)
            times = path.with_suffix(".json")
            try:
                return saved, float(json.loads(times.read_text())["seconds"])
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise CheckpointError(
                    times, f"is damaged or missing ({first_sentence(error)})", RESUME_FIX
                ) from error

        (model, seconds), damaged = run.load_training_state(".zip", load)
        model.set_env(vec_env)
        model.tensorboard_log = tensorboard  # where the run now lies, not where it was saved
        run.resuming(f"step {model.num_timesteps:,} of {ppo.total_steps:,}", damaged, ".zip")
    else:
        model = build_model(algorithm, vec_env, ppo, settings.seed, device, tensorboard)
    run.start(config)
    remaining = ppo.total_steps - model.num_timesteps
    with interrupt_requests() as stop_requests:  # Ctrl-C or SIGTERM: stop after this step
        callback = ValidationCallback(run, env, ppo.eval_every, settings.eval_episodes,
                                      settings.track_test, seconds, stop_requests)  # fmt: skip
        bar = ProgressBar(ppo.total_steps, callback, progress)
        if remaining > 0:
            model.learn(remaining, callback=[callback, bar], reset_num_timesteps=not resume,
                        tb_log_name="ppo")  # fmt: skip
    if stop_requests:
        callback.save_last()
        run.close()
        raise run.interrupted(
            stop_requests[0], f"step {model.num_timesteps:,}", run.checkpoint("last", ".zip")
        )
    if not run.checkpoint("best", ".zip").exists():
        callback.validate()
    best = PPOAgent(config, run.path, "best")
    summary = {
        "test_error": best.error("test"),
        "best_val_error": callback.best,
        "steps": int(model.num_timesteps),
        "train_seconds": round(callback.seconds + time.perf_counter() - callback.started, 1),
    }
    return run.finish(summary)


class PPOAgent:
    """A trained PPO run, as ``glimpse eval`` and ``glimpse viz`` use it."""

    def __init__(self, config: dict[str, Any], run_dir: Path, checkpoint: str) -> None:
        self.algorithm, self.env_settings = config["agent"], config["env"]
        self.eval_episodes = config["run"]["eval_episodes"]
        self.task = task_of(self.env_settings)
        path = run_dir / "checkpoints" / f"{checkpoint}.zip"
        self.model = load_model(self.algorithm, PPOConfig(**config["model"]), self.env_settings,
                                path, fix=evaluation_fix(checkpoint))  # fmt: skip

    def policy(self) -> SB3Policy:
        return SB3Policy(self.model)

    def error(self, split: str, samples: int = 1) -> float:
        """Error in percent on the whole fixed ``split`` (deterministic actions: ``samples``
        must be 1)."""
        if samples != 1:
            raise ConfigError("--samples (Monte Carlo averaging) applies to RAM runs only.")
        episodes = evaluation_episodes(self.env_settings, split, self.eval_episodes)
        return evaluate(self.policy(), episodes).error_percent

    def looking(self, split: str) -> TargetShare:
        """How often the finest patch of a glimpse overlapped the target (in a game, the ball
        where it was at that glimpse)."""
        return self.error_and_looking(split)[1]

    def error_and_looking(self, split: str, samples: int = 1) -> tuple[float, TargetShare]:
        """:meth:`error` and :meth:`looking` from one pass over ``split``."""
        if samples != 1:
            raise ConfigError("--samples (Monte Carlo averaging) applies to RAM runs only.")
        episodes = evaluation_episodes(self.env_settings, split, self.eval_episodes)
        result = evaluate(self.policy(), episodes)
        looking = result.target_share(episodes.sensor, *self.task.canvas_shape[1:])
        return result.error_percent, looking

    def draw(self, out: Path, n: int, split: str, title: str = "") -> Trajectories:
        """The glimpse trajectories on the first ``n`` canvases of ``split``."""
        from glimpse.agents.visualise import draw_policy

        return draw_policy(self.policy(), self.env_settings, out, n, split, title)
