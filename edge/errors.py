"""The project's error hierarchy.

Every error a user can cause says what was asked, what was expected and how to fix it.
The CLI prints ``EdgeError`` messages on one line and exits with status 2; anything else is a bug.
"""


class EdgeError(Exception):
    """Base class of every error lfmim-edge raises on purpose."""


class InputError(EdgeError, ValueError):
    """A file, argument or value given by the user is not what was expected."""


class ConfigError(InputError):
    """A configuration or profile is invalid or does not match what it is used with."""


class CheckpointError(InputError):
    """A checkpoint is missing, corrupt, or does not match the model configuration."""


class DataError(InputError):
    """A data set, feature file or label table is missing, corrupt or of the wrong shape."""


class MissingDependency(EdgeError, ImportError):
    """An optional package is needed for this feature; the message names the install command."""


class BackendUnavailable(EdgeError, RuntimeError):
    """An inference backend was requested that this machine cannot run."""


class EngineIncompatible(EdgeError, RuntimeError):
    """A built engine does not match this machine, package version or profile."""
