"""Pictures of what an agent did and how it learned.

What it did, as an animated GIF (one frame per step) or a PNG grid, under a title line (run,
task, test error) when given:

* Hard attention (RAM, PPO): trajectories recorded to ``.npz`` -- the canvas with every scale's
  box, the path so far, the glimpse itself (``empty`` where it shows blank canvas), and from the
  last step, when the agent gives it, the answer; a key says what the marks mean.
* Soft attention: the attention weights over the canvas at each step, and the answer.

How it learned: :func:`plot_curves`, the validation error of several runs in one PNG.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from glimpse.agents.run_directory import validation_curve
from glimpse.drawing import (
    attention_grid,
    attention_panel,
    tile,
    trajectory_key,
    trajectory_panel,
    with_header,
)
from glimpse.envs.evaluation import Policy, Trajectories, evaluation_episodes, record_trajectories
from glimpse.errors import ConfigError
from glimpse.sensor import GlimpseSensor

FRAME_MS = 700
LAST_FRAME_MS = 2500  # the answer appears only on the last frame: hold it long enough to read
CURVES_SIZE = (900, 540)
"""Default size of :func:`plot_curves`' picture in pixels."""


def run_title(name: str, task: str, test_error: float | None, game: bool = False) -> str:
    """The title line of a run's pictures, say ``mnist-6-ram-seed1 | MNIST-v0 | test error
    0.66%`` (in a game, ``missed`` the balls); ``test_error`` None where none is recorded (a
    run not tested yet)."""
    error = "no test error recorded" if test_error is None else (
        f"{'missed' if game else 'test error'} {test_error:.2f}%")  # fmt: skip
    return f"{name} | {task} | {error}"


def captions(
    labels: np.ndarray, predictions: np.ndarray, scores: np.ndarray, class_names: np.ndarray
) -> list[str]:
    """``label->prediction (probability) ok|WRONG`` per canvas; the probability when the class
    scores exist (all-zero ``scores`` mean the agent gave a class without scores)."""
    names = [str(n) for n in class_names]
    scores = scores.astype(np.float64)
    has_scores = bool(np.any(scores != 0))
    probabilities = np.exp(scores - scores.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    out = []
    for i, (label, prediction) in enumerate(zip(labels, predictions, strict=True)):
        mark = "ok" if label == prediction else "WRONG"
        text = f"{names[label]}->{names[prediction]}"
        if has_scores:
            text += f" ({probabilities[i, prediction]:.0%})"
        out.append(f"{text} {mark}")
    return out


def _sensor(trajectories: Trajectories) -> GlimpseSensor:
    g, k, s = (int(v) for v in trajectories.sensor)
    return GlimpseSensor(g, k, s)


def is_game(trajectories: Trajectories) -> bool:
    """Whether the trajectories play a game (no labels: each episode is a catch or a miss)."""
    return bool((trajectories.labels < 0).all())


def panels_at(trajectories: Trajectories, step: int) -> list:
    """Every episode's :func:`glimpse.drawing.trajectory_panel` at ``step``."""
    sensor = _sensor(trajectories)
    height, width = trajectories.canvases.shape[-2:]
    correct = trajectories.successes
    game = is_game(trajectories)
    if game:  # no class, a catch or a miss
        texts = ["caught" if caught else "missed" for caught in correct]
    else:
        texts = captions(
            trajectories.labels, trajectories.predictions, trajectories.scores,
            trajectories.class_names,
        )  # fmt: skip
    panels = []
    for i in range(len(trajectories.labels)):
        canvas = trajectories.frame(i, step)
        locations = trajectories.locations[i]
        valid = np.nan_to_num(locations)  # rows after the end are never drawn
        origins = sensor.patch_origins(torch.from_numpy(valid), height, width).numpy()
        panels.append(
            trajectory_panel(
                canvas, locations, trajectories.glimpses[i], step, origins,
                sensor.patch_sizes, texts[i], bool(correct[i]), mark_empty=not game,
            )
        )  # fmt: skip
    return panels


def draw_trajectories(
    trajectories: Trajectories, out: Path, columns: int = 4, title: str = ""
) -> None:
    """``.gif``: one frame per step, every episode side by side. ``.png``: one row per episode,
    one column per step. Each picture comes under ``title`` (when given; see
    :func:`run_title`) and a key to the marks."""
    _check_suffix(out)
    horizon = trajectories.locations.shape[1]
    out.parent.mkdir(parents=True, exist_ok=True)
    gif = out.suffix.lower() == ".gif"
    if gif:
        grids = [tile(panels_at(trajectories, t), columns) for t in range(horizon)]
    else:
        steps = [panels_at(trajectories, t) for t in range(horizon)]
        rows = [panel for i in range(len(trajectories.labels)) for panel in (s[i] for s in steps)]
        grids = [tile(rows, horizon)]
    key = trajectory_key(_sensor(trajectories).patch_sizes, grids[0].width, is_game(trajectories))
    frames = [with_header(grid, title, key) for grid in grids]
    if gif:
        _save_gif(frames, out)
    else:
        frames[0].save(out)


def draw_policy(
    policy: Policy, env_settings: dict, out: Path, n: int, split: str, title: str = ""
) -> Trajectories:
    """Records ``policy`` on the first ``n`` canvases of the fixed ``split`` and draws them
    (:func:`draw_trajectories`, under ``title``); returns the trajectories."""
    trajectories = record_trajectories(policy, evaluation_episodes(env_settings, split, n))
    draw_trajectories(trajectories, out, title=title)
    return trajectories


def draw_attention(
    canvases: np.ndarray, weights: np.ndarray, texts: list[str], out: Path, columns: int = 4,
    title: str = "",
) -> None:  # fmt: skip
    """Soft attention ``weights`` ``(n, T, h, w)`` on ``canvases`` ``(n, C, H, W)``.

    ``.gif``: one frame per step, every canvas side by side. ``.png``: one row per canvas, one
    column per step. ``texts`` (one per canvas) are the answers, shown under every step;
    ``title`` (when given) heads the picture.
    """
    _check_suffix(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".png":
        with_header(attention_grid(canvases, weights, texts), title).save(out)
        return
    steps = weights.shape[1]
    frames = []
    for t in range(steps):
        panels = [
            attention_panel(canvas, alphas[t], f"t={t + 1}/{steps} {text}", side=180)
            for canvas, alphas, text in zip(canvases, weights, texts, strict=True)
        ]
        frames.append(with_header(tile(panels, columns), title))
    _save_gif(frames, out)


def plot_curves(run_dirs: Sequence[Path], out: Path, size: tuple[int, int] = CURVES_SIZE) -> None:
    """The runs' validation error (%) in one picture of ``size`` pixels (``.png``, ``.svg`` or
    ``.pdf``): against epoch (RAM, the baselines) or env steps (PPO), on a log scale, with a
    dashed line at each run's test error (``test.json``) where it has one. Runs are named by
    their folder names, or by their paths as given where two folder names are the same.
    """
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ConfigError(f"--plot {out}: choose a .png, .svg or .pdf file.")
    curves = [validation_curve(run) for run in run_dirs]
    for run, (_, errors) in zip(run_dirs, curves, strict=True):
        if not errors:
            raise ConfigError(
                f"{run}/metrics.jsonl holds no validation yet: plot the run after its first "
                "validation (the end of its first epoch, or PPO's first evaluation)."
            )
    axes = {axis for axis, _ in curves}
    if len(axes) > 1:
        raise ConfigError(
            "These runs count progress differently (epochs for RAM and the baselines, env steps "
            "for PPO): plot runs of one kind at a time."
        )
    names = [run.name for run in run_dirs]
    if len(set(names)) < len(names):
        names = [str(run) for run in run_dirs]
    # Imported here: only this function needs matplotlib. A Figure with its own Agg canvas
    # leaves pyplot's global backend alone, so this works without a display and in any process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    dpi = 100
    figure = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for i, (run, name, (_, errors)) in enumerate(zip(run_dirs, names, curves, strict=True)):
        colour = f"C{i % 10}"
        test_error = _test_error(run)
        x = sorted(errors)
        label = name if test_error is None else f"{name} (dashed: test {test_error:.2f}%)"
        ax.plot(x, [errors[v] for v in x], color=colour, linewidth=1.2, label=label)
        if test_error is not None:
            ax.axhline(test_error, color=colour, linestyle="--", linewidth=1)
    ax.set_yscale("log")  # errors fall from tens of percent to below one: decades, not steps
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 20, not 2x10^1

    def minor_label(value: float, _: int) -> str:
        low, high = ax.get_ylim()
        mantissa = round(value / 10 ** math.floor(math.log10(value)))
        # Over more than a decade, labels at every minor tick would overlap: 2, 3 and 5 do.
        return f"{value:g}" if high / low < 10 or mantissa in (2, 3, 5) else ""

    ax.yaxis.set_minor_formatter(FuncFormatter(minor_label))
    if axes.pop() == "epoch":
        ax.set_xlabel("epoch")
    else:
        ax.set_xlabel("env steps")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value / 1e6:g}M"))
    ax.set_ylabel("validation error % (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)


def _test_error(run_dir: Path) -> float | None:
    path = run_dir / "test.json"
    return float(json.loads(path.read_text())["test_error"]) if path.is_file() else None


def _check_suffix(out: Path) -> None:
    if out.suffix.lower() not in (".gif", ".png"):
        raise ConfigError(f"--out {out}: choose a .gif (animated) or .png (static grid) file.")


def _save_gif(frames: list, out: Path) -> None:
    durations = [FRAME_MS] * (len(frames) - 1) + [LAST_FRAME_MS]
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=durations, loop=0)
