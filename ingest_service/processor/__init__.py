"""The event processor: Kafka ``telemetry`` topic -> Delta tables, exactly once.

``main`` is the process (a pool of group members); in each member ``consumer``
runs the Kafka member (``fetcher``, a child process) and queues its records, and
``processor`` turns each batch into lake commits: ``decode`` (vectorized
validation) -> ``dedup`` and ``windows`` (duplicates, lateness, one-minute
aggregation) -> ``sink`` (Delta commits). ``checkpoint`` is the exactly-once
protocol: the offsets those commits carry, read back on every assignment, where
the member seeks; ``assignment`` rebuilds a processor's memory of the partitions it
takes over from the lake.
"""

from ingest_service.processor.processor import BatchResult, Processor

__all__ = ["BatchResult", "Processor"]
