"""What an agent costs per image at inference: FLOPs, counted by PyTorch rather than by hand.

:func:`ram_flops` and :func:`baseline_flops` run one image through a model under
``torch.utils.flop_counter.FlopCounterMode``: for RAM a whole episode of ``T`` glimpses as
deployed (:class:`RAMPredictor`; its networks, while the sensor's table lookups are memory
reads, not FLOPs), for the full-view baselines one forward pass over the whole canvas. The
latencies time the same calls on canvases already in memory, and :func:`peak_memory_bytes`
follows the tensors they create. The hard agent's cost depends on
its glimpse budget, not on the canvas; a full-view model's grows with the canvas's pixels.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from glimpse.agents.baselines import BASELINES, BaselineConfig, make_baseline
from glimpse.agents.ram import RAM, RAMConfig, RAMPredictor
from glimpse.envs.episodes import GlimpseEpisodes
from glimpse.envs.evaluation import Policy, Trajectories, evaluation_episodes, record_trajectories
from glimpse.envs.glimpse_env import make_episodes, task_of
from glimpse.errors import ConfigError
from glimpse.sensor import GlimpseSensor
from glimpse.tasks import Task

K = TypeVar("K")  # the key of a model timed by latency_ms


def _lstm_layer_flops(
    input_shape: Sequence[int], w_ih: Sequence[int], w_hh: Sequence[int], *args: Any,
    **kwargs: Any,
) -> int:  # fmt: skip
    """FLOPs of ``aten.mkldnn_rnn_layer`` (what ``nn.LSTM`` runs on a CPU, one call per layer
    and direction, which PyTorch's counter does not know): the two products of every step,
    ``4H x in`` and ``4H x H``, as ``nn.LSTMCell``'s are counted."""
    steps = input_shape[0] * input_shape[1]  # sequence x batch, in either order
    return 2 * steps * (w_ih[0] * w_ih[1] + w_hh[0] * w_hh[1])


def _cudnn_lstm_flops(
    input_shape: Sequence[int], weights: Sequence[Sequence[int]], *args: Any, **kwargs: Any
) -> int:
    """FLOPs of ``aten._cudnn_rnn`` (``nn.LSTM`` on a GPU): every layer's and direction's two
    products per step, from its weight matrices (the biases are 1-D)."""
    steps = input_shape[0] * input_shape[1]
    return 2 * steps * sum(w[0] * w[1] for w in weights if len(w) == 2)


def count_flops(run: Callable[[], object]) -> int:
    """FLOPs of the PyTorch operations ``run`` executes (numpy's are not counted); products
    and convolutions, as ``torch.utils.flop_counter`` counts them, and ``nn.LSTM`` layers."""
    lstm = {torch.ops.aten.mkldnn_rnn_layer: _lstm_layer_flops,
            torch.ops.aten._cudnn_rnn: _cudnn_lstm_flops}  # fmt: skip
    with FlopCounterMode(display=False, custom_mapping=lstm) as counter, torch.no_grad():
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
    return count_flops(lambda: predictor.predict(canvas))


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
    return count_flops(lambda: model(canvas))


def recipe_flops(agent: str, config: dict[str, Any]) -> int:
    """Inference FLOPs per image of a run or recipe of RAM or a full-view baseline, from its
    configuration (``env`` and ``model`` sections, as in a run's ``config.json``)."""
    if agent == "ram":
        return ram_flops(config["env"], RAMConfig(**config["model"]))
    if agent not in BASELINES:
        raise ConfigError(
            f"recipe_flops counts RAM and the full-view baselines ({', '.join(BASELINES)}), not "
            f"{agent}; a policy's FLOPs come from its trained run (flops_per_step, count_flops)."
        )
    return baseline_flops(agent, config["env"], BaselineConfig(**config["model"]))


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


def latency_ms(
    runs: Mapping[K, Callable[[], object]],
    batch: int,
    seconds: float,
    min_rounds: int = 3,
    block_seconds: float = 0.05,
) -> dict[K, float]:
    """Milliseconds per image of each of ``runs`` (one call: one batch of ``batch`` canvases),
    timed in turn, round after round, for ``seconds`` and at least ``min_rounds`` rounds.

    In a round each run has a block of calls: one to warm it up (untimed: the run before it
    has taken its weights out of the caches), then at least two timed ones, for at least
    ``block_seconds``; its block's figure is its fastest call. Its figure is the median of its
    blocks, shuffled every round (with a fixed seed) so that no run always goes first or
    follows the same one (always first, a RAM took 1.40 ms where its copy took 1.24).

    Timed in turns so that a change in the machine's load falls on all of them alike (timed
    one after another, half a second each, the same RAM network took 1.09 and 1.65 ms in one
    report on a busy day, 2026-12-08); warm within a block, as a model serving a stream of
    requests is (timed one call each in turn, the 2-layer FC net at 100 px took 0.90 ms
    against 0.26 to 0.31 in warm blocks, reloading its 10 MB of weights at every call:
    ``benchmarks/latency.py --sizes 100 --threads 2 --batches 1``, the two timers alternating,
    AMD EPYC, 2026-12-08). Two warm-up calls each
    first, because TorchScript (RAM's compiled episode) optimises a function on its second
    call."""
    import time

    blocks: dict[K, list[float]] = {key: [] for key in runs}
    order, shuffle = list(runs.items()), random.Random(0).shuffle
    with torch.inference_mode():
        for run in runs.values():
            run()
            run()
        deadline = time.perf_counter() + seconds
        while len(next(iter(blocks.values()), [])) < min_rounds or time.perf_counter() < deadline:
            shuffle(order)
            for key, run in order:
                run()
                calls: list[float] = []
                started = time.perf_counter()
                while len(calls) < 2 or time.perf_counter() - started < block_seconds:
                    start = time.perf_counter()
                    run()
                    calls.append(time.perf_counter() - start)
                blocks[key].append(min(calls))
    return {key: 1000.0 * statistics.median(best) / batch for key, best in blocks.items()}


class _LiveTensorBytes(TorchDispatchMode):
    """Follows the storages that PyTorch operations create (not views of their inputs) while
    they live, and keeps the most bytes alive at once, checked after every operation."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        inputs = {StorageWeakRef(t.untyped_storage()).cdata for t in tensors}
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                ref = StorageWeakRef(tensor.untyped_storage())
                if ref.cdata not in inputs and ref.cdata not in self.live:
                    self.live[ref.cdata] = (ref, tensor.untyped_storage().nbytes())
        self.live = {key: entry for key, entry in self.live.items() if not entry[0].expired()}
        self.peak = max(self.peak, sum(nbytes for _, nbytes in self.live.values()))
        return out


def peak_memory_bytes(run: Callable[[], object]) -> int:
    """The most bytes held at once by the tensors ``run`` creates (activations, tables,
    outputs; not the weights or the caller's inputs), between one operation and the next.

    A storage counts with the size it was created with: one grown later (``resize_``, an
    ``out=`` argument) is undercounted, and so are buffers a kernel uses inside itself
    (convolution workspaces). The inference paths measured here do neither."""
    with torch.no_grad(), _LiveTensorBytes() as tracker:
        run()
    return tracker.peak


def ram_inference(
    env_settings: dict, batch: int, config: RAMConfig | None = None, compile: bool = True
) -> Callable[[], object]:
    """RAM's inference on ``batch`` canvases in memory, as deployed (:class:`RAMPredictor`:
    the sensor's tables, ``T`` glimpses, the networks); ``compile=False`` runs it eagerly."""
    predictor, task = ram_predictor(env_settings, config)
    predictor.compile = compile
    canvases = canvases_of(task, batch)
    return lambda: predictor.predict(canvases)


def baseline_inference(
    name: str, env_settings: dict, batch: int, config: BaselineConfig | None = None
) -> Callable[[], object]:
    """A full-view baseline's forward pass on ``batch`` canvases in memory (uint8 to answers)."""
    task, model = baseline_model(name, env_settings, config)
    canvases = canvases_of(task, batch)
    return lambda: model(torch.from_numpy(canvases).float().div_(255.0))


def policy_inference(
    policy: Policy, env_settings: dict, batch: int
) -> tuple[Callable[[], Trajectories], GlimpseEpisodes]:
    """A policy that acts through the environment (an SB3 model, for instance) playing whole
    episodes on the first ``batch`` test canvases, and the episodes it steps."""
    episodes = evaluation_episodes(env_settings, "test", batch)
    return lambda: record_trajectories(policy, episodes), episodes


def flops_per_step(policy: Policy, env_settings: dict) -> float:
    """FLOPs per step of ``policy`` playing the first test episode through the environment:
    the PyTorch operations of the whole episode over the steps it took (in a game, where the
    agent acts at every step, the cost of one step of play)."""
    play, _ = policy_inference(policy, env_settings, 1)
    trajectory: list[Trajectories] = []
    flops = count_flops(lambda: trajectory.append(play()))
    steps = int(np.sum(~np.isnan(trajectory[0].locations[0, :, 0])))
    return flops / steps
