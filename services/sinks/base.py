"""The one interface every kind of sink implements, and the table of kinds by URL scheme.

A kind is one module: a `Sink` subclass decorated with `@kind("scheme", ...)`, imported in
`services/sinks/__init__.py`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from pipelines.errors import ReelflowError
from services.settings import Settings

KINDS: dict[str, type[Sink]] = {}  # URL scheme -> the class of its sinks


class SinkError(ReelflowError):
    """A sink URL reelflow cannot use: an unknown kind, a malformed URL, a broker that refuses it."""


class DeliveryError(Exception):
    """A delivery that did not go through. `retryable`: worth trying again (connection errors,
    timeouts, 5xx, 408, 429); otherwise the receiver refused the messages for good (other 4xx)."""

    def __init__(self, reason: str, retryable: bool = True):
        super().__init__(reason)
        self.reason, self.retryable = reason, retryable


class Sink(ABC):
    """Where messages (services.store.outbox) go. One instance per sink per deliverer; `send` is
    called from one thread at a time, with the oldest waiting messages in order."""

    schemes: ClassVar[tuple[str, ...]] = ()
    name: ClassVar[str] = ""  # the kind, as `status` shows it

    def __init__(self, url: str, settings: Settings):
        self.url, self.settings = url, settings

    @classmethod
    def check_url(cls, url: str, settings: Settings) -> None:
        """Raise SinkError (one line: what is wrong, and the fix) if `url` cannot be a sink of this
        kind; cheap, no connection (done at submit and watch)."""

    @classmethod
    def check_stack(cls, url: str, settings: Settings) -> None:
        """Raise SinkError if the stack's own settings cannot serve this sink (done when `up` starts,
        for every sink it knows); by default nothing to check."""

    def connect_check(self) -> None:
        """Raise SinkError if the sink cannot be reached or refuses us now (at `submit`, `watch`, and
        when `up` starts, for its global sinks); by default nothing to check."""

    @abstractmethod
    def send(self, messages: list[dict]) -> None:
        """Deliver these messages, in order, or raise DeliveryError."""

    def close(self) -> None:
        """Release connections and files."""


def kind(*schemes: str):
    """Class decorator: the sinks of these URL schemes are of this class."""
    def register(cls: type[Sink]) -> type[Sink]:
        cls.schemes = schemes
        for scheme in schemes:
            KINDS[scheme] = cls
        return cls
    return register
