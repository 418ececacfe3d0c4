"""The agents, declared once: what each is configured by, and how it trains and loads.

The command line (its options for ``glimpse train AGENT``), run loading, ``glimpse eval``,
``glimpse viz`` and ``glimpse compare`` all find an agent's configuration, training and loading
in :data:`AGENTS`. What differs inside a family is left to the family's own module (the
full-view baselines' models in :mod:`glimpse.agents.baselines`, their costs in
:mod:`glimpse.agents.cost`).

A run's configuration has a section per config class (see :mod:`glimpse.agents.runs`):
``env`` (the task and the episodes), ``run`` (:class:`RunConfig`: seed, folder, machine) and
the agent's own sections, named in :attr:`Agent.sections`: ``model`` (its networks and how
they learn) and, for the agents trained by gradient steps over epochs, ``train``
(:class:`glimpse.agents.trainer.TrainConfig`).

Next on the way to the training loop: :func:`_train_epochs` builds the agent's learner
(RAM's: :class:`glimpse.agents.learners.RAMLearner`) and runs
:meth:`glimpse.agents.trainer.Trainer.train`; PPO's agents train in :mod:`glimpse.agents.ppo`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from glimpse.agents.baselines import BaselineConfig
from glimpse.agents.ppo import PPOConfig
from glimpse.agents.ram import RAMConfig
from glimpse.agents.run_directory import RunConfig, RunDirectory, TrainingError, resolve_device
from glimpse.agents.trainer import TrainConfig
from glimpse.envs.episodes import EpisodeConfig
from glimpse.envs.evaluation import TargetShare, Trajectories
from glimpse.errors import ConfigError
from glimpse.tasks import Task, TaskConfig

TASK_SETTINGS = tuple(f.name for f in dataclasses.fields(TaskConfig))
EPISODE_SETTINGS = tuple(f.name for f in dataclasses.fields(EpisodeConfig))
SENSOR_SETTINGS = ("glimpses", "glimpse_size", "num_scales", "scale_factor", "first_location")


class TrainedAgent(Protocol):
    """A trained agent loaded from a run directory, as ``glimpse eval`` and ``viz`` use it."""

    task: Task

    def error(self, split: str, samples: int = 1) -> float:
        """Error in percent on the whole fixed ``split`` (``samples`` > 1: Monte Carlo)."""

    def looking(self, split: str) -> TargetShare | None:
        """How much of its looking fell on the target over the whole fixed ``split``; None
        for models that look at the whole canvas at once (the CNNs and the FC network)."""

    def error_and_looking(self, split: str, samples: int = 1) -> tuple[float, TargetShare | None]:
        """:meth:`error` and :meth:`looking` together, from one pass over ``split`` where
        one gives both."""

    def draw(self, out: Path, n: int, split: str, title: str = "") -> Trajectories | None:
        """Draws what it did on the first ``n`` canvases of ``split`` into ``out``, headed by
        ``title``; returns the glimpse trajectories where it has them."""


@dataclass(frozen=True)
class Agent:
    """One agent: its settings and the functions that train and load it."""

    name: str
    summary: str
    sections: dict[str, type]
    """The agent's own config sections (``model``, and ``train`` where it has one)."""
    env_settings: tuple[str, ...]
    """The environment settings it uses; the command line offers these, others are refused."""
    train: Callable[[Agent, dict[str, Any], RunDirectory, bool, bool], dict[str, Any]]
    """``train(agent, config, run, resume, progress)`` trains or resumes; returns the summary
    that ``test.json`` holds."""
    load: Callable[[Agent, dict[str, Any], Path, str], TrainedAgent]
    """``load(agent, config, run_dir, checkpoint)`` gives the trained agent."""
    learner: Callable[[dict[str, Any], Any], Any] | None = None
    """Agents trained by :class:`glimpse.agents.trainer.Trainer`: ``learner(config, device)``
    makes their :class:`glimpse.agents.trainer.Learner`."""
    fixed_env: dict[str, Any] = field(default_factory=dict)
    """Environment settings the agent needs whatever the user asks (RAM's continuous actions,
    PPO's history observation)."""
    model_defaults_from_env: dict[str, str] = field(default_factory=dict)
    """Model settings that default (when None) to an environment setting."""
    check: Callable[[dict[str, Any]], None] = lambda config: None
    """Checks settings of different sections against each other before a run starts."""
    checkpoint_suffix: str = ".pt"
    plays_games: bool = False
    """Whether it can act in a game (``task="catch"``), where every step's action moves the
    paddle and the reward comes from the game, not from a class named at the end."""

    def env(self, settings: dict[str, Any]) -> dict[str, Any]:
        """``settings`` with :attr:`fixed_env` applied; a setting asked for that contradicts a
        fixed one is an error naming both."""
        for key, value in self.fixed_env.items():
            if key in settings and settings[key] != value:
                raise ConfigError(
                    f"{self.name} runs with {key}={value!r}, not {settings[key]!r}: leave "
                    f"--{key.replace('_', '-')} out."
                )
        return {**settings, **self.fixed_env}


def _train_epochs(
    spec: Agent, config: dict[str, Any], run: RunDirectory, resume: bool, progress: bool
) -> dict[str, Any]:
    """Trains an agent that has a :attr:`Agent.learner` with the generic trainer."""
    from glimpse.agents import distributed
    from glimpse.agents.trainer import Trainer

    assert spec.learner is not None
    settings = RunConfig(**config["run"])
    device = resolve_device(settings.device)
    distributed.setup(device)
    train = TrainConfig(**config["train"])
    trainer = Trainer(spec.learner(config, device), train, run, config, progress,
                      settings.track_test)  # fmt: skip
    if resume:
        trainer.resume()
    elif train.init_from is not None:
        trainer.start_from(train.init_from)
    return trainer.train()


def _load_learner(spec: Agent, config: dict[str, Any], run_dir: Path, checkpoint: str) -> Any:
    """The learner of a trained run, holding the weights of ``checkpoints/<checkpoint>.pt``."""
    from glimpse.agents.run_directory import evaluation_fix, load_checkpoint
    from glimpse.agents.runs import config_differences, migrate_config
    from glimpse.agents.trainer import load_model_weights

    assert spec.learner is not None
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    saved = load_checkpoint(path, evaluation_fix(checkpoint))
    if "config" in saved:
        stored = migrate_config(saved["config"])
        differences = [d for d in config_differences(stored, config) if d.startswith("model.")]
        if differences:
            raise TrainingError(
                f"{path} was trained with other model settings than {run_dir / 'config.json'} "
                f"says ({'; '.join(differences)}). Restore the original config.json."
            )
    learner = spec.learner(config, resolve_device("auto"))
    load_model_weights(learner.model, saved["model"], path)
    learner.model.eval()
    return learner


def _ram_learner(config: dict[str, Any], device: Any) -> Any:
    from glimpse.agents.learners import RAMLearner

    run = RunConfig(**config["run"])
    return RAMLearner(config["env"], RAMConfig(**config["model"]),
                      TrainConfig(**config["train"]).batch_size, run.seed, device,
                      run.eval_episodes)  # fmt: skip


def _full_view_learner(config: dict[str, Any], device: Any) -> Any:
    from glimpse.agents.baselines import FullViewLearner

    run = RunConfig(**config["run"])
    return FullViewLearner(config["agent"], config["env"], BaselineConfig(**config["model"]),
                           run.seed, device, run.eval_episodes)  # fmt: skip


def _check_ram(config: dict[str, Any]) -> None:
    batch, k = config["train"]["batch_size"], config["model"]["rollouts_per_image"]
    if batch % k:
        raise ConfigError(
            f"batch_size={batch} is not a multiple of rollouts_per_image={k}; choose a batch "
            "size that K divides."
        )


def _train_ppo(
    spec: Agent, config: dict[str, Any], run: RunDirectory, resume: bool, progress: bool
) -> dict[str, Any]:
    from glimpse.agents.ppo import train_ppo

    return train_ppo(config, run, resume, progress)


def _load_ppo(spec: Agent, config: dict[str, Any], run_dir: Path, checkpoint: str) -> Any:
    from glimpse.agents.ppo import PPOAgent

    return PPOAgent(config, run_dir, checkpoint)


def _check_ppo(config: dict[str, Any]) -> None:
    from glimpse.agents.ppo import check_ppo_settings

    check_ppo_settings(config["agent"], PPOConfig(**config["model"]), config["env"])


_PPO_ENV = tuple(s for s in TASK_SETTINGS + EPISODE_SETTINGS if s != "history")


def _ppo(name: str, summary: str, history: bool) -> Agent:
    return Agent(
        name, summary, sections={"model": PPOConfig}, env_settings=_PPO_ENV, train=_train_ppo,
        load=_load_ppo, fixed_env={"history": history}, check=_check_ppo,
        checkpoint_suffix=".zip", plays_games=True,
    )  # fmt: skip


def _full_view(name: str, summary: str) -> Agent:
    return Agent(
        name, summary, sections={"model": BaselineConfig, "train": TrainConfig},
        env_settings=TASK_SETTINGS, train=_train_epochs, load=_load_learner,
        learner=_full_view_learner, model_defaults_from_env={"attention_steps": "glimpses"},
    )  # fmt: skip


AGENTS: dict[str, Agent] = {
    spec.name: spec
    for spec in (
        Agent(
            "ram", "the Recurrent Attention Model; REINFORCE learns where to look (Mnih et al.)",
            sections={"model": RAMConfig, "train": TrainConfig},
            env_settings=TASK_SETTINGS + SENSOR_SETTINGS, train=_train_epochs,
            load=_load_learner, learner=_ram_learner, fixed_env={"action_type": "continuous"},
            check=_check_ram, plays_games=True,
        ),
        _ppo("ppo", "a glimpse policy trained by PPO (SB3); memory from the glimpse history", True),
        _ppo("recurrent-ppo", "a glimpse policy with an LSTM, trained by RecurrentPPO", False),
        _full_view("soft", "full view: soft attention over a CNN's feature grid (Xu et al. 2015)"),
        _full_view("cnn", "full view: the paper's two-layer convolutional network"),
        _full_view("deep-cnn", "full view: six convolutions, batch norm, global max-pool"),
        _full_view("fc", "full view: the paper's two-layer fully connected network"),
    )
}  # fmt: skip


def agent(name: str) -> Agent:
    """The agent called ``name``, or an error listing them."""
    if name not in AGENTS:
        raise ConfigError(f"Unknown agent {name!r}; choose one of {', '.join(AGENTS)}.")
    return AGENTS[name]
