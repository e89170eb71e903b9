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


def one_line(error: BaseException, limit: int = 500) -> str:
    """An exception as one line for a person: every error message reelflow shows or stores goes
    through here.

    - an error raised in another process and wrapped (Ray's task errors carry the original as
      `cause`) shows the original;
    - a message that is a whole traceback (Ray Serve's deployment failures) shows its last line
      naming an error;
    - a validation error (pydantic) shows each problem as `field: message`;
    - else the message with its white space folded (an OSError's `strerror`), or the type's name.

    >>> one_line(ValueError("no\\n  such   file"))
    'no such file'
    >>> one_line(KeyError())
    'KeyError'
    """
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException) and cause is not error:
        return one_line(cause, limit)
    problems = validation_problems(error)
    if problems:
        text = "; ".join(problems)
    else:
        # an OSError's strerror leaves out its file name or URL, which the caller names (or must not show)
        text = (error.strerror if isinstance(error, OSError) else None) or str(error).strip()
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if any(line.startswith("Traceback") for line in lines):  # the exception is at the end
            named = [line for line in lines if "Error" in line or "error" in line or "Exception" in line]
            text = named[-1] if named else lines[-1]
        text = " ".join(text.split())
    return text[:limit] if text else type(error).__name__


def validation_problems(error: BaseException, whole: str = "") -> list[str]:
    """A pydantic ValidationError's problems as `field: message` (`whole`: the name for a problem of
    the whole value, say `body`); [] for any other exception."""
    if not type(error).__name__.endswith("ValidationError") or not callable(getattr(error, "errors", None)):
        return []
    problems = []
    for err in error.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or whole
        message = str(err.get("msg", "")).removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return problems
