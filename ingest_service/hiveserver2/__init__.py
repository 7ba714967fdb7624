"""The HiveServer2 endpoint: TCLIService over Thrift with SASL PLAIN, executing HiveQL with
:mod:`workbench.query` (DuckDB over the lake's Delta tables, scoped per principal)."""

from ingest_service.hiveserver2.server import HiveServer2, run_hiveserver2

__all__ = ["HiveServer2", "run_hiveserver2"]
