"""The event processor: Kafka ``telemetry`` topic -> Delta tables, exactly once.

``consumer`` (Kafka group, rebalance, buffer) -> ``decode`` (vectorized
validation) -> ``dedup`` and ``windows`` (duplicates, lateness, one-minute
aggregation) -> ``sink`` (Delta commits with offsets). ``processor`` holds the
commit protocol; ``main`` is the process.
"""

from ingest_service.processor.processor import BatchResult, Processor

__all__ = ["BatchResult", "Processor"]
