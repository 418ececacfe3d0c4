"""Exceptions that carry a message meant for the user.

Every error a user can cause by what they pass in (a file, a folder, a value) is raised as a
subclass of :class:`GlimpseError` with a one-paragraph message that names the problem and the
fix. The command line catches :class:`GlimpseError`, prints the message and exits with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class GlimpseError(Exception):
    """Base class of the errors whose message is written for the user."""


class DataError(GlimpseError):
    """A dataset file or image folder is missing, unreadable, truncated or corrupted."""


class ChecksumError(DataError):
    """A dataset file decompressed fine but its content is not the published one.

    It may be a good file of another dataset with the same name (MNIST's where Fashion-MNIST's
    was looked for); the message then names that file and does not call it corrupted.
    """


class ConfigError(GlimpseError, ValueError):
    """A configuration value is out of range or of the wrong type."""
