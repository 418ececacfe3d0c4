"""glimpse: hard visual attention with a fast glimpse sensor, Gymnasium environments and agents.

The foundation lives here: :mod:`glimpse.sensor` (the glimpse sensor), :mod:`glimpse.data` and
:mod:`glimpse.tasks` (datasets and the canvases of each task), :mod:`glimpse.drawing` and the
command line :mod:`glimpse.cli`. Environments are in :mod:`glimpse.envs` (the repository's
``envs/`` folder), agents in :mod:`glimpse.agents` (``agents/``).
"""

from __future__ import annotations

from glimpse.errors import ChecksumError, ConfigError, DataError, GlimpseError
from glimpse.registration import register_envs
from glimpse.sensor import GlimpseSensor, IntegralImages
from glimpse.tasks import Task, TaskConfig, make_task

__version__ = "0.2.0"  # keep equal to pyproject.toml's version

register_envs()

__all__ = [
    "ChecksumError",
    "ConfigError",
    "DataError",
    "GlimpseError",
    "GlimpseSensor",
    "IntegralImages",
    "Task",
    "TaskConfig",
    "make_task",
]
