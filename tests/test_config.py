"""Settings checks shared by every config dataclass (glimpse.config): types, choices, ranges.

A bad value is refused when the dataclass is made, with a one-line error naming the setting,
instead of a crash deep in training (an IndexError, an SB3 assertion, a ZeroDivisionError).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from glimpse.agents.baselines import BaselineConfig
from glimpse.agents.ppo import PPOConfig
from glimpse.agents.ram import RAMConfig
from glimpse.agents.trainer import TrainConfig
from glimpse.envs.episodes import EpisodeConfig
from glimpse.errors import ConfigError
from glimpse.tasks import TaskConfig

REFUSED = [  # (config class, settings, what the error says)
    (TaskConfig, {"size": "60"}, "size='60' is a string, not an integer or None"),
    (TaskConfig, {"task": "cifar"}, "task='cifar'; choose one of mnist"),
    (TaskConfig, {"dataset": "cifar"}, "dataset='cifar'; choose one of mnist"),
    (TaskConfig, {"distractors": -1}, "distractors=-1 must be at least 0"),
    (TaskConfig, {"distractor_size": 0}, "distractor_size=0 must be at least 1"),
    (TaskConfig, {"channels": 2}, r"channels=2; choose 1 \(grey\) or 3 \(RGB\)"),
    (TaskConfig, {"test_fraction": 1.0}, "test_fraction=1.0 must be at least 0 and below 1"),
    (EpisodeConfig, {"glimpses": 6.0}, "glimpses=6.0 is a number, not an integer"),
    (EpisodeConfig, {"history": 1}, "history=1 is an integer, not a boolean"),
    (EpisodeConfig, {"grid_size": 0}, "grid_size=0 must be at least 1"),
    (RAMConfig, {"hidden_size": 0}, "hidden_size=0 must be at least 1"),
    (RAMConfig, {"location_std": 0.0}, "location_std=0.0 must be positive"),
    (RAMConfig, {"locator_units": -1}, "locator_units=-1 must be at least 0"),
    (TrainConfig, {"epochs": True}, r"epochs=True is a boolean \(true or false\), not an integer"),
    (TrainConfig, {"epoch_size": 0}, "epoch_size=0 must be at least 1"),
    (TrainConfig, {"lr": 0.0}, "lr=0.0 must be positive"),
    (TrainConfig, {"final_lr_fraction": -0.1}, "final_lr_fraction=-0.1 must be at least 0"),
    (TrainConfig, {"momentum": float("nan")}, "momentum=nan must be at least 0"),
    (TrainConfig, {"ema_decay": 1.0}, "ema_decay=1.0 must be at least 0 and below 1"),
    (TrainConfig, {"ema_decay": -0.5}, "ema_decay=-0.5 must be at least 0 and below 1"),
    (PPOConfig, {"n_steps": 0}, "n_steps=0 must be at least 1"),
    (PPOConfig, {"batch_size": 1}, "batch_size=1 must be at least 2"),
    (PPOConfig, {"eval_every": 0}, "eval_every=0 must be at least 1"),
    (PPOConfig, {"learning_rate": 0.0}, "learning_rate=0.0 must be positive"),
    (PPOConfig, {"gamma": 1.5}, "gamma=1.5 must lie between 0 and 1"),
    (PPOConfig, {"ent_coef": -0.01}, "ent_coef=-0.01 must be at least 0"),
    (BaselineConfig, {"attention_steps": 0}, "attention_steps=0 must be at least 1"),
]


@pytest.mark.parametrize(("config", "settings", "match"), REFUSED)
def test_a_bad_setting_is_refused_with_its_name_when_the_config_is_made(config, settings, match):
    with pytest.raises(ConfigError, match=match):
        config(**settings)


def test_settings_from_python_may_be_numpy_numbers_paths_and_whole_floats():
    """The type check refuses wrong kinds, not values an experienced user would pass."""
    config = TaskConfig(task="folder", root=Path("images"), size=np.int64(32), test_fraction=0)
    assert config.size == 32 and config.test_fraction == 0
    assert EpisodeConfig(glimpses=np.int64(5), step_reward=1).glimpses == 5
    assert TrainConfig(lr=np.float32(1e-3), epoch_size=None).epoch_size is None
