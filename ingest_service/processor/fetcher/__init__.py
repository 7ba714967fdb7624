"""The processor's Kafka member: a child process that polls and hands record columns over.

Fetching and storing overlap: the member (this child process) fetches the next batch
while the processor stores the last one. In a thread of the processor the member
would hold the GIL for much of its time and stall the processing thread at every
return from polars, pyarrow or deltalake; in its own process it runs truly beside it.
The child is the consumer-group member; the parent
(:class:`~ingest_service.processor.consumer.Poller`) keeps the processor's state and
decides, from the lake, where every partition is read from.

* :mod:`~ingest_service.processor.fetcher.channel`: the messages between the two and
  their wire format (length-prefixed pickles over the child's stdin/stdout);
* :mod:`~ingest_service.processor.fetcher.member`: what both members share (asking the
  parent, watching the topic's id);
* :mod:`~ingest_service.processor.fetcher.rdkafka`: the member on librdkafka, the
  default, with its fetches paced to the parent's takes;
* :mod:`~ingest_service.processor.fetcher.sequence`: that member's rules for which
  polled records continue a partition's position;
* :mod:`~ingest_service.processor.fetcher.kafka_python`: the member on kafka-python,
  the fallback (``WORKBENCH_PROCESSOR_CLIENT=kafka-python``);
* ``__main__``: the child's entry point.

The client settings are here too, for the benchmarks' bare consumers.
"""

from ingest_service.processor.fetcher.channel import read_message, write_message
from ingest_service.processor.fetcher.kafka_python import consumer_settings
from ingest_service.processor.fetcher.member import POLL_RECORDS
from ingest_service.processor.fetcher.rdkafka import rdkafka_settings

__all__ = ["POLL_RECORDS", "consumer_settings", "rdkafka_settings", "read_message", "write_message"]
