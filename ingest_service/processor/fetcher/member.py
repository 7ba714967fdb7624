"""What both Kafka members share: asking the parent, and watching the topic's id.

Every exchange with the parent is a request the member waits on the answer to
(:mod:`~ingest_service.processor.fetcher.channel` lists them): the parent, not the
member, decides where a partition is read from, since only the lake knows what is
stored.
"""

from __future__ import annotations

import logging
from typing import IO, Any

from ingest_service.processor.fetcher.channel import read_message, write_message
from workbench.config import Config

__all__ = ["POLL_RECORDS", "Member"]

logger = logging.getLogger(__name__)

# Records per poll: big enough to amortise the poll's fixed costs, small enough that
# a batch starts being processed soon after its first records arrive.
POLL_RECORDS = 20_000


class Member:
    """What both members share: every exchange with the parent is request/answer, and a
    new topic id seen between rebalances is reported."""

    config: Config
    inbox: IO[bytes]
    outbox: IO[bytes]
    topic_id: str | None

    def ask(self, message: object) -> Any:
        write_message(self.outbox, message)
        return read_message(self.inbox)

    def seek(self, answer: tuple[str, Any], what: str) -> None:
        raise NotImplementedError

    def has_partitions(self) -> bool:
        raise NotImplementedError

    def topic_id_now(self, now: str | None) -> None:
        """``now`` is the topic's id as just seen: a new one means the topic was deleted
        and created again, so the parent re-bases its partitions and they are read anew."""
        if now is None or now == self.topic_id:
            return
        if self.topic_id is not None and self.has_partitions():
            logger.warning(
                "topic %s has a new id (%s, was %s): it was re-created",
                self.config.topic,
                now,
                self.topic_id,
            )
            self.seek(self.ask(("topic_changed",)), "re-reading a re-created topic")
        self.topic_id = now
