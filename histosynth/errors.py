"""Errors that name the input at fault, so a user knows which file, key or slide to fix."""


class InputError(ValueError):
    """Bad user input: the message names the file, config key or slide responsible."""


class ResourceError(InputError):
    """The run's surroundings failed (disk full, server unreachable); the message names the file or
    config key to check. Reported like an input error: one line, no traceback."""
