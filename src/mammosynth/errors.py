"""Exceptions whose message is meant for the user: what was wrong and what to do."""


class MammosynthError(Exception):
    """Base class; the CLI prints ``str(err)`` as a one-line reason and exits non-zero."""


class DataError(MammosynthError):
    """A data file is missing, unreadable or inconsistent. The message names the file."""


class ConfigError(MammosynthError):
    """A configuration value is unknown or out of range."""


class CheckpointError(MammosynthError):
    """A run folder or checkpoint does not match what was asked for (method, version, shapes)."""


class WeightsError(MammosynthError):
    """Pretrained weights are missing or fail their checksum."""
