"""Errors the agent reports to an operator as one clear line rather than a traceback."""

from __future__ import annotations


class AgentError(Exception):
    """Base class: the message is the whole story (it names the file, key or field)."""


class ConfigError(AgentError):
    """The agent's config file or command line is invalid."""


class ResourceError(AgentError):
    """A template resource's TOML file is invalid."""


class BackendError(AgentError):
    """A backend could not answer (after its own retries and failover)."""


class RejectedError(BackendError):
    """The backend answered and refused (HTTP 4xx): retrying the same request cannot help."""


class BusyError(BackendError):
    """metad answered 503 with ``Retry-After``: it sheds load, and asks to be asked again no
    sooner than ``retry_after`` seconds from now."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
