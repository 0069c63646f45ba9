"""rnnkit's error classes: what a user can cause and fix, each message one line that names the
file, option or value at fault.

The command line (:func:`rnnkit.cli.main`) prints any of them as ``rnnkit: error: <message>``
and exits non-zero, without a traceback (``--debug`` or ``RNNKIT_DEBUG=1`` shows it). They
live here, apart from the modules that raise them, so that config, tasks, heads and data can
all import them without importing one another.
"""

from __future__ import annotations


class RnnkitError(Exception):
    """A failure the user can fix; its message is one line naming the culprit."""


class ConfigError(RnnkitError, ValueError):
    """A configuration value, key or file a user gave is wrong (the CLI exits 2)."""


class DataFormatError(RnnkitError, ValueError):
    """A data file is not in the expected format; the message is ``<file>:<line>: <what>``."""


class CheckpointError(RnnkitError):
    """A checkpoint cannot be found or read; the message names the file and what is wrong."""


class TrainingStopped(RnnkitError, RuntimeError):
    """Training cannot go on (a non-finite loss or gradient); nothing was saved after it."""


class Terminated(KeyboardInterrupt):
    """The process was sent SIGTERM; raised in the main thread so that training writes a last
    checkpoint and stops, as on Ctrl-C."""


class ShapeError(ValueError, RuntimeError):
    """A tensor given to a network has the wrong shape (input features, a state ``hx``) or no
    time step. ``torch.nn``'s RNNs raise RuntimeError for these; rnnkit's message names the
    argument and both shapes, and the error is a ValueError and a RuntimeError at once, so
    ``except RuntimeError:`` written for torch still catches it."""


class DataWarning(UserWarning):
    """Data that can be read but deserves a look (e.g. test tags never seen in training); the
    command line prints it as one ``rnnkit: warning: ...`` line."""


def os_error_text(e: OSError) -> str:
    """An OS error as ``<path>: <the system's reason>`` (a rename names its target second),
    or its own message when it names no path."""
    path = e.filename2 or e.filename
    return f"{path}: {e.strerror}" if path and e.strerror else str(e)


__all__ = ["RnnkitError", "ConfigError", "DataFormatError", "CheckpointError",
           "TrainingStopped", "Terminated", "ShapeError", "DataWarning", "os_error_text"]
