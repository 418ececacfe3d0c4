"""Registers the ``Glimpse/...`` environment ids with Gymnasium (on ``import glimpse``).

Entry points are strings, so registering imports nothing from ``envs`` until an id is made.
Each id has a ``vector_entry_point``: ``gymnasium.make_vec(id, num_envs=N)`` builds one
natively batched environment, not N copies.
"""

from __future__ import annotations

from typing import Any

import gymnasium

ENTRY_POINT = "glimpse.envs.glimpse_env:GlimpseEnv"
VECTOR_ENTRY_POINT = "glimpse.envs.glimpse_env:GlimpseVectorEnv"

_MNIST_SENSOR = {"glimpse_size": 8, "num_scales": 1, "glimpses": 6}  # paper: 6 glimpses, 8x8
_CANVAS_SENSOR = {"glimpse_size": 12, "num_scales": 3, "scale_factor": 2, "glimpses": 8}
_CATCH_SENSOR = {"glimpse_size": 6, "num_scales": 3, "scale_factor": 2}

ENVIRONMENTS: dict[str, dict[str, Any]] = {
    "Glimpse/MNIST-v0": {"task": "mnist", **_MNIST_SENSOR},
    "Glimpse/TranslatedMNIST-v0": {"task": "translated", "size": 60, **_CANVAS_SENSOR},
    "Glimpse/ClutteredMNIST60-v0": {
        "task": "cluttered", "size": 60, "distractors": 4, **_CANVAS_SENSOR,
    },
    "Glimpse/ClutteredMNIST100-v0": {
        "task": "cluttered", "size": 100, "distractors": 8, **_CANVAS_SENSOR, "num_scales": 4,
    },
    "Glimpse/ClutteredMNIST200-v0": {  # the 100 px density; the coarsest patch 192 px wide
        "task": "cluttered", "size": 200, "distractors": 32, **_CANVAS_SENSOR, "num_scales": 5,
    },
    "Glimpse/FashionMNIST-v0": {"task": "fashion-mnist", **_MNIST_SENSOR, "num_scales": 2},
    "Glimpse/ImageFolder-v0": {"task": "folder", "size": 64, **_CANVAS_SENSOR},
    # The paper's game: 3 scales of 6 x 6 (the coarsest sees the whole 24 x 24 screen from the
    # centre, where the first glimpse is taken); a glimpse per step of the game (23 on 24 x 24,
    # 31 on 64 x 64, see glimpse.catch)
    "Glimpse/Catch-v0": {"task": "catch", "size": 24, **_CATCH_SENSOR, "glimpses": 23,
                         "first_location": "centre"},
    "Glimpse/Catch64-v0": {"task": "catch", "size": 64, **_CATCH_SENSOR, "glimpses": 31,
                           "first_location": "centre"},
}  # fmt: skip


def register_envs() -> None:
    """Registers every id of :data:`ENVIRONMENTS` that is not registered yet."""
    for env_id, kwargs in ENVIRONMENTS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(
                id=env_id,
                entry_point=ENTRY_POINT,
                vector_entry_point=VECTOR_ENTRY_POINT,
                kwargs=kwargs,
            )
