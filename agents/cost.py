"""What an agent costs per image at inference: FLOPs, counted by PyTorch rather than by hand.

:func:`ram_flops` and :func:`baseline_flops` run one image through a model under
``torch.utils.flop_counter.FlopCounterMode``: for RAM a whole episode of ``T`` glimpses as
deployed (:class:`RAMPredictor`; its networks, while the sensor's table lookups are memory
reads, not FLOPs), for the full-view baselines one forward pass over the whole canvas. The
latencies time the same calls on canvases already in memory. The hard agent's cost depends on
its glimpse budget, not on the canvas; a full-view model's grows with the canvas's pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from glimpse.agents.baselines import BaselineConfig, make_baseline
from glimpse.agents.ram import RAM, RAMConfig, RAMPredictor
from glimpse.envs.glimpse_env import make_episodes, task_of
from glimpse.sensor import GlimpseSensor
from glimpse.tasks import Task


def _count(run: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        run()
    return int(counter.get_total_flops())


def ram_predictor(
    env_settings: dict, config: RAMConfig | None = None
) -> tuple[RAMPredictor, Task]:
    """An untrained RAM with the sensor and glimpse budget of ``env_settings``, as deployed
    (:class:`RAMPredictor`: whole episodes in the model), and the task it reads."""
    settings = {**env_settings, "action_type": "continuous"}
    episodes = make_episodes(1, "train", False, settings)
    model = RAM(episodes.glimpse_shape, episodes.task.num_classes, config or RAMConfig())
    config_ = episodes.config
    predictor = RAMPredictor(model, episodes.sensor, config_.glimpses, config_.first_location)
    return predictor, episodes.task


def canvases_of(task: Task, batch: int) -> np.ndarray:
    """``batch`` fresh training canvases of ``task``, uint8 ``(batch, C, H, W)``."""
    rng = np.random.default_rng(0)
    return task.canvases("train", rng.integers(0, task.split_size("train"), batch), rng)[0]


def ram_flops(env_settings: dict, config: RAMConfig | None = None) -> int:
    """FLOPs of one RAM episode (``T`` glimpses and the answer) on one canvas."""
    predictor, task = ram_predictor(env_settings, config)
    canvas = canvases_of(task, 1)
    return _count(lambda: predictor.predict(canvas))


def baseline_model(
    name: str, env_settings: dict, config: BaselineConfig | None
) -> tuple[Task, torch.nn.Module]:
    """The task and an untrained full-view baseline (soft attention: T = the glimpse budget)."""
    task = task_of(env_settings)
    config = config or BaselineConfig(attention_steps=env_settings.get("glimpses", 8))
    return task, make_baseline(name, task, config).eval()


def baseline_flops(name: str, env_settings: dict, config: BaselineConfig | None = None) -> int:
    """FLOPs of one forward pass of a full-view baseline on one canvas."""
    task, model = baseline_model(name, env_settings, config)
    canvas = torch.zeros(1, *task.canvas_shape)
    return _count(lambda: model(canvas))


def pixels_read(locations: np.ndarray, sensor: GlimpseSensor, canvas: int) -> float:
    """Mean number of distinct canvas pixels under any patch of any glimpse of an episode.

    ``locations`` ``(n, T, 2)`` from recorded trajectories (NaN after an episode's end).
    """
    counts = []
    for episode in locations:  # a picture per episode: the union of its boxes
        seen = np.zeros((canvas, canvas), bool)
        taken = episode[~np.isnan(episode[:, 0])]
        origins = sensor.patch_origins(torch.from_numpy(taken), canvas, canvas).numpy()
        for step in origins:
            for (x0, y0), side in zip(step, sensor.patch_sizes, strict=True):
                seen[max(y0, 0) : max(y0 + side, 0), max(x0, 0) : max(x0 + side, 0)] = True
        counts.append(seen.sum())
    return float(np.mean(counts))


def latency_ms(run: Callable[[], object], batch: int, repeats: int = 5) -> float:
    """Milliseconds per image of ``run`` (one batch), best of ``repeats`` after a warm-up."""
    import time

    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            run()
        best = min(best, time.perf_counter() - start)
    return 1000.0 * best / batch


def ram_latency_ms(env_settings: dict, batch: int, config: RAMConfig | None = None) -> float:
    """CPU time per image of RAM's inference at ``batch``: from canvases in memory to the
    answers (the sensor's tables, ``T`` glimpses, the networks), with :class:`RAMPredictor`."""
    predictor, task = ram_predictor(env_settings, config)
    canvases = canvases_of(task, batch)
    return latency_ms(lambda: predictor.predict(canvases), batch)


def baseline_latency_ms(
    name: str, env_settings: dict, batch: int, config: BaselineConfig | None = None
) -> float:
    """CPU time per image of a full-view baseline at ``batch``: from canvases in memory to the
    answers."""
    task, model = baseline_model(name, env_settings, config)
    canvases = canvases_of(task, batch)
    return latency_ms(lambda: model(torch.from_numpy(canvases).float().div_(255.0)), batch)
