"""Pictures of what an agent did, as an animated GIF (one frame per step) or a PNG grid.

* Hard attention (RAM, PPO): trajectories recorded to ``.npz`` -- the canvas with every scale's
  box, the path so far, the glimpse itself, the answer.
* Soft attention: the attention weights over the canvas at each step, and the answer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from glimpse.drawing import attention_grid, attention_panel, tile, trajectory_panel
from glimpse.envs.evaluation import Policy, Trajectories, evaluation_episodes, record_trajectories
from glimpse.errors import ConfigError
from glimpse.sensor import GlimpseSensor

FRAME_MS = 700


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


def panels_at(trajectories: Trajectories, step: int) -> list:
    g, k, s = (int(v) for v in trajectories.sensor)
    sensor = GlimpseSensor(g, k, s)
    height, width = trajectories.canvases.shape[-2:]
    texts = captions(
        trajectories.labels, trajectories.predictions, trajectories.scores,
        trajectories.class_names,
    )  # fmt: skip
    panels = []
    for i, canvas in enumerate(trajectories.canvases):
        locations = trajectories.locations[i]
        valid = np.nan_to_num(locations)  # rows after the end are never drawn
        origins = sensor.patch_origins(torch.from_numpy(valid), height, width).numpy()
        panels.append(
            trajectory_panel(
                canvas, locations, trajectories.glimpses[i], step, origins,
                sensor.patch_sizes, texts[i],
            )
        )  # fmt: skip
    return panels


def draw_trajectories(trajectories: Trajectories, out: Path, columns: int = 4) -> None:
    """``.gif``: one frame per step, every episode side by side. ``.png``: one row per episode,
    one column per step."""
    _check_suffix(out)
    horizon = trajectories.locations.shape[1]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".gif":
        frames = [tile(panels_at(trajectories, t), columns) for t in range(horizon)]
        _save_gif(frames, out)
    else:
        steps = [panels_at(trajectories, t) for t in range(horizon)]
        rows = [panel for i in range(len(trajectories.labels)) for panel in (s[i] for s in steps)]
        tile(rows, horizon).save(out)


def draw_policy(
    policy: Policy, env_settings: dict, out: Path, n: int, split: str
) -> Trajectories:
    """Records ``policy`` on the first ``n`` canvases of the fixed ``split`` and draws them
    (:func:`draw_trajectories`); returns the trajectories."""
    trajectories = record_trajectories(policy, evaluation_episodes(env_settings, split, n))
    draw_trajectories(trajectories, out)
    return trajectories


def draw_attention(
    canvases: np.ndarray, weights: np.ndarray, texts: list[str], out: Path, columns: int = 4
) -> None:
    """Soft attention ``weights`` ``(n, T, h, w)`` on ``canvases`` ``(n, C, H, W)``.

    ``.gif``: one frame per step, every canvas side by side. ``.png``: one row per canvas, one
    column per step. ``texts`` (one per canvas) are the answers, shown under every step.
    """
    _check_suffix(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".png":
        attention_grid(canvases, weights, texts).save(out)
        return
    steps = weights.shape[1]
    frames = []
    for t in range(steps):
        panels = [
            attention_panel(canvas, alphas[t], f"t={t + 1}/{steps} {text}", side=180)
            for canvas, alphas, text in zip(canvases, weights, texts, strict=True)
        ]
        frames.append(tile(panels, columns))
    _save_gif(frames, out)


def _check_suffix(out: Path) -> None:
    if out.suffix.lower() not in (".gif", ".png"):
        raise ConfigError(f"--out {out}: choose a .gif (animated) or .png (static grid) file.")


def _save_gif(frames: list, out: Path) -> None:
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=FRAME_MS, loop=0)
