"""Errors a user can fix: the CLIs print the message and exit with code 2."""


class UserError(Exception):
    """Bad input whose message says what is wrong and how to fix it."""


class CheckpointError(UserError):
    """A checkpoint that cannot be loaded into the requested student."""
