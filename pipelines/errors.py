"""Errors a user can cause and fix. Each message is one line naming the problem and the fix."""


class ReelflowError(Exception):
    """Base class: the CLI prints these as one line, never as a traceback."""


class UnknownModelError(ReelflowError, ValueError):
    """A model name that is not in the model table."""


class WeightsError(ReelflowError):
    """Weights that cannot be found, downloaded or loaded."""


class VideoError(ReelflowError):
    """A source that cannot be opened or decoded as video."""


class InputError(ReelflowError, ValueError):
    """Frames or options of the wrong shape or type."""


class SourceNotAllowed(ReelflowError):
    """A source outside the allowed roots, schemes or hosts, or over the size bounds."""
