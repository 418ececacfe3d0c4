"""Runs: from a configuration to a trained run directory, and from a run directory back to a model.

A run's configuration (``config.json``) has four sections: ``agent``, ``env_id``, ``env`` (the
environment settings: the id's registered ones plus overrides), ``model`` and ``train``. The
command line writes it, ``--config`` reads it back, ``--resume`` continues the run it describes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch

import glimpse  # noqa: F401  (registers the Glimpse ids)
from agents import distributed
from agents.baselines import BASELINES, BaselineConfig, FullViewLearner
from agents.learners import RAMLearner
from agents.ppo import ALGORITHMS as PPO_ALGORITHMS
from agents.ppo import PPOAgent, PPOConfig, check_advantage, ppo_config, train_ppo
from agents.ram import RAMConfig
from agents.trainer import (
    RUNTIME_SETTINGS,
    TrainConfig,
    Trainer,
    TrainingError,
    config_dict,
    load_checkpoint,
    load_model_weights,
    resolve_device,
    validation_curve,
)
from envs.evaluation import standard_error_percent
from envs.glimpse_env import split_settings
from glimpse.errors import ConfigError

AGENTS = ("ram", *PPO_ALGORITHMS, *BASELINES)
MODEL_CONFIGS: dict[str, type] = {
    "ram": RAMConfig,
    "ppo": PPOConfig,
    "recurrent-ppo": PPOConfig,
    **{name: BaselineConfig for name in BASELINES},
}


def env_settings(env_id: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The registered settings of ``env_id`` with ``overrides`` on top, checked (names, types
    and choices) before a run directory is made for them."""
    if env_id not in gymnasium.registry or not env_id.startswith("Glimpse/"):
        known = ", ".join(sorted(i for i in gymnasium.registry if i.startswith("Glimpse/")))
        raise ConfigError(f"Unknown environment id {env_id!r}; choose one of: {known}.")
    settings = {**gymnasium.spec(env_id).kwargs, **overrides}
    split_settings(settings)
    return settings


def model_config(
    agent: str, env_id: str, env: dict[str, Any], base: dict[str, Any], typed: dict[str, Any]
) -> Any:
    """The agent's model settings: defaults, then ``base`` (from --config), then ``typed``.

    PPO agents also take their block of the hyperparameter file (before ``base``); the soft
    attention baseline's steps default to the environment's glimpse budget.
    """
    if agent not in AGENTS:
        raise ConfigError(f"Unknown agent {agent!r}; choose one of {', '.join(AGENTS)}.")
    if agent in PPO_ALGORITHMS:
        return ppo_config(agent, env_id, base, typed)
    values = {**base, **typed}
    if agent in BASELINES and values.get("attention_steps") is None:
        values["attention_steps"] = env_settings(env_id, env)["glimpses"]
    return _dataclass(MODEL_CONFIGS[agent], values, "model")


def train_config(base: dict[str, Any], typed: dict[str, Any]) -> TrainConfig:
    """The training settings: defaults, then ``base`` (from --config), then ``typed``."""
    return _dataclass(TrainConfig, {**base, **typed}, "train")


def make_run_config(
    agent: str,
    env_id: str,
    env_overrides: dict[str, Any],
    model: Any,
    train: TrainConfig,
) -> dict[str, Any]:
    if agent not in AGENTS:
        raise ConfigError(f"Unknown agent {agent!r}; choose one of {', '.join(AGENTS)}.")
    return config_dict(
        agent=agent,
        env_id=env_id,
        env=env_settings(env_id, env_overrides),
        model=model,
        train=train,
    )


def resolved_config(config: dict[str, Any]) -> dict[str, Any]:
    """A stored run config as it resolves today: settings added since it was saved get their
    defaults, so an older run compares equal to a new one of the same recipe."""
    agent, env_id, env = config["agent"], config["env_id"], config["env"]
    model = model_config(agent, env_id, env, config["model"], {})
    return make_run_config(agent, env_id, env, model, train_config(config["train"], {}))


def run_name(config: dict[str, Any]) -> str:
    train = config["train"]
    if train["name"]:
        return train["name"]
    short = config["env_id"].split("/")[-1].removesuffix("-v0").lower()
    return f"{short}-{config['agent']}-seed{train['seed']}"


def read_run_config(path: Path) -> dict[str, Any]:
    """A ``config.json`` (or a run directory holding one), checked for its sections."""
    path = path / "config.json" if path.is_dir() else path
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise ConfigError(
            f"{path} does not exist: pass a run directory or its config.json."
        ) from error
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not valid JSON ({error}); fix or delete it.") from error
    missing = {"agent", "env_id", "env", "model", "train"} - set(config)
    if missing:
        raise ConfigError(f"{path} lacks the section(s) {', '.join(sorted(missing))}.")
    return config


def _dataclass(cls: type, values: dict[str, Any], where: str) -> Any:
    try:
        return cls(**values)
    except TypeError as error:
        names = ", ".join(f.name for f in dataclasses.fields(cls))
        raise ConfigError(
            f"The {where} section has an unknown setting ({error}); valid: {names}."
        ) from error


def build_learner(config: dict[str, Any], device: torch.device) -> RAMLearner | FullViewLearner:
    """The learner (model and data) that ``config`` describes (RAM or a full-view baseline)."""
    train = _dataclass(TrainConfig, config["train"], "train")
    model = _dataclass(MODEL_CONFIGS[config["agent"]], config["model"], "model")
    if config["agent"] in BASELINES:
        return FullViewLearner(
            config["agent"], config["env"], model, train.seed, device, train.eval_episodes
        )
    return RAMLearner(
        config["env"],
        model,
        batch_size=train.batch_size,
        seed=train.seed,
        device=device,
        reinforce_weight=train.reinforce_weight,
        rollouts_per_image=train.rollouts_per_image,
        eval_episodes=train.eval_episodes,
    )


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


def resume_run(
    run_dir: Path, runtime: dict[str, Any] | None = None, progress: bool = True
) -> dict[str, Any]:
    """Continues the run in ``run_dir`` (wherever it now lies) with its own ``config.json``.

    ``runtime`` may change the :data:`RUNTIME_SETTINGS` only, say ``{"threads": 1}`` for a run
    that continues on a busy machine; the new values are written to ``config.json``.
    """
    config = read_run_config(run_dir)
    changed = sorted(set(runtime or {}) - set(RUNTIME_SETTINGS))
    if changed:
        raise ConfigError(
            f"--resume continues {run_dir} with the settings in its config.json, so it takes "
            f"no {', '.join('--' + name.replace('_', '-') for name in changed)}; only "
            f"{' and '.join('--' + name for name in RUNTIME_SETTINGS)} may change. To train "
            f"with other settings, start a new run: --config {run_dir / 'config.json'} "
            "--name NEW with the options to change."
        )
    config["train"].update(runtime or {}, runs_dir=str(run_dir.parent), name=run_dir.name)
    return train_run(config, resume=True, progress=progress)


def train_run(
    config: dict[str, Any], resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Trains (or resumes) the run ``config`` describes; returns the summary of ``test.json``."""
    train = _dataclass(TrainConfig, config["train"], "train")
    run_dir = Path(train.runs_dir) / run_name(config)
    if not resume and (run_dir / "checkpoints").exists():
        raise ConfigError(
            f"{run_dir} already holds a run. Continue it with --resume, or pick another --name."
        )
    if config["agent"] in PPO_ALGORITHMS:
        ppo = _dataclass(PPOConfig, config["model"], "model")
        check_advantage(config["agent"], ppo, config["env"])
    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    set_threads(train.threads)
    if config["agent"] in PPO_ALGORITHMS:
        return train_ppo(config, run_dir, resume, progress)
    device = resolve_device(train.device)
    distributed.setup(device)
    learner = build_learner(config, device)
    trainer = Trainer(learner, train, run_dir, config, device, progress)
    if resume:
        trainer.resume()
    return trainer.train()


def load_run(
    run_dir: Path, checkpoint: str = "best"
) -> tuple[dict[str, Any], RAMLearner | FullViewLearner]:
    """A run's configuration and its learner holding the chosen checkpoint's weights."""
    config = read_run_config(run_dir)
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    saved = load_checkpoint(path)
    if saved.get("config", config)["model"] != config["model"]:
        raise TrainingError(
            f"{path} was trained with model settings {saved['config']['model']}, but "
            f"{run_dir / 'config.json'} says {config['model']}. Restore the original config.json."
        )
    learner = build_learner(config, resolve_device("auto"))
    load_model_weights(learner.model, saved["model"], path)
    learner.model.eval()
    return config, learner


def load_agent(run_dir: Path, checkpoint: str = "best") -> RAMLearner | FullViewLearner | PPOAgent:
    """The trained agent of any run directory, ready to evaluate or visualise."""
    config = read_run_config(run_dir)
    if config["agent"] in PPO_ALGORITHMS:
        return PPOAgent(config, run_dir, checkpoint)
    return load_run(run_dir, checkpoint)[1]


def evaluate_run(
    run_dir: Path, split: str = "test", samples: int = 1, checkpoint: str = "best"
) -> dict[str, Any]:
    """Error of a saved run on a whole fixed split, written to :func:`evaluation_file`."""
    if samples < 1:
        raise ConfigError(f"--samples {samples} must be at least 1.")
    agent = load_agent(run_dir, checkpoint)
    if samples > 1 and not isinstance(agent, RAMLearner):
        raise ConfigError("--samples (Monte Carlo averaging) applies to RAM runs only.")
    if isinstance(agent, PPOAgent):
        evaluation = agent.evaluate(split)
        error, images = evaluation.error_percent, len(evaluation.labels)
    elif isinstance(agent, FullViewLearner):
        error, images = agent.error(split), agent.task.split_size(split)
    else:
        error, images = agent.error(split, samples), agent.task.split_size(split)
    result = {
        "split": split,
        "checkpoint": checkpoint,
        "samples": samples,
        "error": error,
        "standard_error": standard_error_percent(error, images),
        "images": images,
    }
    (run_dir / evaluation_file(split, samples, checkpoint)).write_text(
        json.dumps(result, indent=2) + "\n"
    )
    return result


def evaluation_file(split: str, samples: int = 1, checkpoint: str = "best") -> str:
    """``eval-<split>.json`` for the defaults; other settings add to the name (never overwrite).

    For example ``eval-test.json`` (the best checkpoint, mean locations: what the results
    tables quote), ``eval-test-samples10.json``, ``eval-val-last.json``.
    """
    name = f"eval-{split}"
    if checkpoint != "best":
        name += f"-{checkpoint}"
    if samples != 1:
        name += f"-samples{samples}"
    return name + ".json"


def curves_table(run_dirs: list[Path], every: int = 1) -> str:
    """Markdown: the runs' validation errors side by side, at every ``every``-th epoch (or step
    count that is a multiple of ``every``) and at each run's first and last; then each run's
    best validation error (and where) and its test error. A row's single lowest error is bold.
    Columns are named by the runs' folder names, or by their paths as given where two folder
    names are the same."""
    if every < 1:
        raise ConfigError(f"--every {every} must be at least 1.")
    curves = [validation_curve(run) for run in run_dirs]
    axes = {axis for axis, _ in curves}
    if len(axes) > 1:
        raise ConfigError(
            "These runs count progress differently (epochs for RAM and the baselines, env steps "
            "for PPO): compare runs of one kind at a time."
        )
    axis = axes.pop()
    names = [run.name for run in run_dirs]
    if len(set(names)) < len(names):
        names = [str(run) for run in run_dirs]
    ends = {x for _, errors in curves if errors for x in (min(errors), max(errors))}
    points = sorted({x for _, errors in curves for x in errors if x % every == 0} | ends)
    lines = [
        f"| {axis} | " + " | ".join(names) + " |",
        "|---" * (len(run_dirs) + 1) + "|",
    ]
    for x in points:
        lines.append(_curves_row(f"{x:,}", [errors.get(x) for _, errors in curves]))
    best_cells = []
    for _, errors in curves:
        x, error = min(errors.items(), key=lambda item: item[1]) if errors else (0, None)
        best_cells.append("-" if error is None else f"{error:.2f} ({axis} {x:,})")
    lines.append("| best validation | " + " | ".join(best_cells) + " |")
    tests = [_recorded_test_error(run) for run in run_dirs]
    lines.append(_curves_row("test", tests))
    return "\n".join(lines)


def _curves_row(label: str, errors: list[float | None]) -> str:
    known = [error for error in errors if error is not None]
    lowest = min(known, default=None)
    if known.count(lowest) != 1 or len(known) == 1:  # bold marks a single leader
        lowest = None
    cells = [
        "-" if error is None else f"**{error:.2f}**" if error == lowest else f"{error:.2f}"
        for error in errors
    ]
    return f"| {label} | " + " | ".join(cells) + " |"


def _recorded_test_error(run_dir: Path) -> float | None:
    path = run_dir / "test.json"
    return float(json.loads(path.read_text())["test_error"]) if path.is_file() else None


def visualise_run(
    run_dir: Path, out: Path, n: int = 16, split: str = "test", checkpoint: str = "best"
) -> Path | None:
    """Draws what the run's agent did on the first ``n`` canvases of ``split``.

    Hard attention (RAM, PPO): its glimpse trajectories, also kept next to the run
    (``trajectories-<split>.npz``, whose path is returned). Soft attention: its attention
    weights at each step (returns None). The CNN and FC baselines attend to nothing: refused.
    """
    from agents.visualise import draw_trajectories
    from envs.evaluation import evaluation_episodes, record_trajectories

    if n < 1:
        raise ConfigError(f"--n {n} must be at least 1.")
    agent = load_agent(run_dir, checkpoint)
    if isinstance(agent, FullViewLearner):
        _draw_soft_attention(agent, run_dir, out, n, split)
        return None
    episodes = evaluation_episodes(agent.env_settings, split, n)
    trajectories = record_trajectories(agent.policy(), episodes)
    npz = run_dir / f"trajectories-{split}.npz"
    trajectories.save(npz)
    draw_trajectories(trajectories, out)
    return npz


def _draw_soft_attention(
    learner: FullViewLearner, run_dir: Path, out: Path, n: int, split: str
) -> None:
    from agents.baselines import SoftAttention
    from agents.visualise import captions, draw_attention

    if not isinstance(learner.model, SoftAttention):
        raise ConfigError(
            f"{run_dir} is a full-view {type(learner.model).__name__}: it reads the whole canvas "
            f"at once, with no glimpses and no attention to draw. glimpse viz draws RAM and PPO "
            f"trajectories and soft attention maps."
        )
    fixed = learner.task.fixed_canvases(split)
    canvases, labels = fixed.images[:n], fixed.labels[:n]
    logits, weights = learner.attention(canvases)
    texts = captions(labels, logits.argmax(1), logits, np.asarray(learner.task.class_names))
    draw_attention(canvases, weights, texts, out)
