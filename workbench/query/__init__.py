"""HiveQL over the lake: a principal-scoped DuckDB session (:class:`QuerySession`), the
HiveQL checks and translation, and the pyhive client helpers the CLI and notebooks use."""

from workbench.query.engine import QueryResult, QuerySession
from workbench.query.types import Column

__all__ = ["Column", "QueryResult", "QuerySession"]
