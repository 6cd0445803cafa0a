"""Errors that name the input at fault, so a user knows which file, key or slide to fix."""


class InputError(ValueError):
    """Bad user input: the message names the file, config key or slide responsible."""
