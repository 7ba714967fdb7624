"""Entry point of the Kafka member child: ``python -m ingest_service.processor.fetcher``.

The child ignores SIGTERM/SIGINT (the parent decides when to leave) and exits as soon
as the parent is gone (its stdin closes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys

from ingest_service.processor.fetcher.channel import write_message
from ingest_service.processor.fetcher.kafka_python import KafkaPythonMember
from ingest_service.processor.fetcher.rdkafka import RdkafkaMember
from workbench.config import Config

logger = logging.getLogger(__name__)


def main() -> int:
    """Entry point of the child (``python -m ingest_service.processor.fetcher``)."""
    from workbench.logs import configure_logging

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = Config.from_env()
    configure_logging(config.log_level)
    inbox, outbox = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the channel
    try:
        member = KafkaPythonMember if config.processor_client == "kafka-python" else RdkafkaMember
        logger.info(
            "Kafka member on %s joining group %s for topic %s",
            config.processor_client,
            config.processor_group,
            config.topic,
        )
        member(config, inbox, outbox).run()
    except (EOFError, BrokenPipeError):
        return 0  # the parent is gone: so are we (the group notices after the session timeout)
    except BaseException as exc:
        logger.exception("polling Kafka failed")
        with contextlib.suppress(OSError):
            write_message(outbox, ("error", f"{type(exc).__name__}: {exc}"))
        return 1
    return 0


if __name__ == "__main__":
    os._exit(main())
