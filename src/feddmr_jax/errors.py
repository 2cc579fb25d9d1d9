"""Errors the library raises for problems a user can fix.

The CLI turns every :class:`FeddmrError` into one line on stderr and exit code 2
(a traceback only with ``--debug``). Library code raises the most specific
subclass with a message that names the file, line or field and what is wrong.
"""


class FeddmrError(Exception):
    """Base class of user-facing errors (bad input, bad config, missing data)."""


class DataError(FeddmrError):
    """A dataset file or folder is missing, malformed, or fails verification."""


class ConfigError(FeddmrError):
    """A configuration value, flag or config file is invalid."""


class DivergedError(FeddmrError):
    """Training diverged: the model's scores are non-finite, or no client upload was
    accepted (all non-finite) in ``train.max_rejected_rounds`` consecutive rounds."""
