"""User-facing errors: each message says what is wrong and what to do about it.

`run.py` prints these without a traceback and exits non-zero, so a bad input costs seconds, not a GPU hour.
"""


class RespodiffError(Exception):
    """Base class for errors whose message is meant for the user as it is."""


class ConfigError(RespodiffError):
    """The configuration asks for something invalid (unknown concept, negative lambda, ...)."""


class MissingAssetError(RespodiffError):
    """A model, dataset or evaluator file is not available locally; the message names how to get it."""


class CheckpointMismatchError(RespodiffError):
    """Saved modules or an image store do not match the model or configuration they are used with."""
