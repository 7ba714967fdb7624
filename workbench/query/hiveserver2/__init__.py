"""The HiveServer2 endpoint: TCLIService over Thrift with SASL PLAIN, executing HiveQL with
:mod:`workbench.query` (DuckDB over the lake's Delta tables, scoped per principal).

Run it with ``python -m workbench.query.hiveserver2`` (``workbench up`` does). Modules:
:mod:`.server` accepts, authenticates and caps connections; :mod:`.transport` speaks
thrift-sasl; :mod:`.handler` answers each TCLIService call; :mod:`.sessions` holds
sessions, operations and their limits; :mod:`.rowsets` puts results on the wire;
:mod:`.catalog` answers the metadata calls. Importing it loads the Thrift stack, so the
``workbench`` command never does at start-up.
"""

from workbench.query.hiveserver2.server import HiveServer2, run_hiveserver2

__all__ = ["HiveServer2", "run_hiveserver2"]
