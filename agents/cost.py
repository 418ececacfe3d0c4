"""What an agent costs per image at inference: FLOPs, counted by PyTorch rather than by hand.

:func:`inference_flops` runs one image through a model under
``torch.utils.flop_counter.FlopCounterMode``: for RAM a whole episode of ``T`` glimpses (its
networks; the sensor's table lookups are memory reads, not FLOPs), for the full-view baselines
one forward pass over the whole canvas. The hard agent's cost depends on its glimpse budget,
not on the canvas; a full-view model's grows with the canvas's pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from agents.baselines import BaselineConfig, make_baseline
from agents.ram import RAM, RAMConfig
from envs.glimpse_env import make_episodes


def _count(run: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        run()
    return int(counter.get_total_flops())


def ram_flops(env_settings: dict, config: RAMConfig | None = None) -> int:
    """FLOPs of one RAM episode (``T`` glimpses and the answer) on one canvas."""
    settings = {**env_settings, "action_type": "continuous"}
    episodes = make_episodes(1, "train", False, settings)  # one fresh canvas, nothing cached
    model = RAM(episodes.glimpse_shape, episodes.task.num_classes, config or RAMConfig()).eval()
    episodes.seed(np.zeros(1, np.uint64))
    episodes.reset(np.ones(1, bool))

    def episode() -> None:
        state = model.core.initial_state(1, torch.device("cpu"))
        for t in range(episodes.config.glimpses):
            last = t == episodes.config.glimpses - 1
            out, state = model.step(episodes.observations(), state, last, sample=False)
            episodes.step(out.action)

    return _count(episode)


def baseline_flops(name: str, env_settings: dict, config: BaselineConfig | None = None) -> int:
    """FLOPs of one forward pass of a full-view baseline on one canvas."""
    from glimpse.tasks import TaskConfig, make_task

    task_fields = TaskConfig.__dataclass_fields__
    task = make_task(TaskConfig(**{k: v for k, v in env_settings.items() if k in task_fields}))
    config = config or BaselineConfig(attention_steps=env_settings.get("glimpses", 8))
    model = make_baseline(name, task, config).eval()
    canvas = torch.zeros(1, *task.canvas_shape)
    return _count(lambda: model(canvas))
