"""Pictures of what an agent did: trajectories recorded to ``.npz``, drawn as a GIF or a grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from envs.evaluation import Trajectories
from glimpse.drawing import tile, trajectory_panel
from glimpse.errors import ConfigError
from glimpse.sensor import GlimpseSensor

FRAME_MS = 700


def captions(trajectories: Trajectories) -> list[str]:
    """``label -> prediction (probability)`` per episode; the probability when scores exist."""
    names = [str(n) for n in trajectories.class_names]
    scores = trajectories.scores.astype(np.float64)
    has_scores = bool(np.any(scores != 0))
    probabilities = np.exp(scores - scores.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    out = []
    for i, (label, prediction) in enumerate(
        zip(trajectories.labels, trajectories.predictions, strict=True)
    ):
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
    texts = captions(trajectories)
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
    horizon = trajectories.locations.shape[1]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".gif":
        frames = [tile(panels_at(trajectories, t), columns) for t in range(horizon)]
        frames[0].save(out, save_all=True, append_images=frames[1:], duration=FRAME_MS, loop=0)
    elif out.suffix.lower() == ".png":
        steps = [panels_at(trajectories, t) for t in range(horizon)]
        rows = [panel for i in range(len(trajectories.labels)) for panel in (s[i] for s in steps)]
        tile(rows, horizon).save(out)
    else:
        raise ConfigError(f"--out {out}: choose a .gif (animated) or .png (static grid) file.")
