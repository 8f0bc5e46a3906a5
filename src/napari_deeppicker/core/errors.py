"""Exception types raised by the core for bad input.

All derive from ``ValueError`` (never ``RuntimeError``: superqt treats a ``RuntimeError`` raised in
a generator worker as an aborted thread and fires neither ``errored`` nor ``finished``). Messages
name the file and the problem so that they can be shown to the user as they are.
"""


class DeepPickerError(ValueError):
    """Base class of every error the core raises for bad input."""


class MicrographError(DeepPickerError):
    """A micrograph file is missing, corrupt, truncated, of the wrong shape or holds NaN/inf."""


class CoordinatesError(DeepPickerError):
    """A coordinates file is missing or malformed, or coordinates fall outside the image."""


class ModelFileError(DeepPickerError):
    """A model file is missing, corrupt or of an unknown architecture or version."""


class BoxSizeError(DeepPickerError):
    """A box size is not positive or is larger than the image it is used on."""


class TrainingDataError(DeepPickerError):
    """There is nothing (or too little) to train on."""
