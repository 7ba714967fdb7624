"""Which records of a poll continue a partition's position: the librdkafka member's rules.

The member keeps its own position per partition (the offset after the last record it
handed over; a fresh partition's is its log's first offset, asked of Kafka at the
assignment, so it is always a number) and hands over only records that continue it,
in this order:

* records of a partition no longer assigned are dropped;
* offsets going backwards within a poll: only the last run counts;
* records delivered already are dropped;
* a gap makes it drop the records from the gap on, seek back and read the partition
  again. A gap seen three times (read again twice) is taken as the log's own:
  compaction and transaction markers leave gaps in a real Kafka's offsets.

A poll that spans a rebalance (the callbacks run inside ``consume``) returns records
fetched for the old assignment ahead of the new one's: they are the reason for the
first rule and for one more — after a rebalance a gap is always the old assignment's
records (the new one's start exactly at its position), never the log's own. Each case
is logged, as a warning unless it is that rebalance case.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["Sequence"]

logger = logging.getLogger(__name__)

# How often the same gap is read again before it is taken as the log's own.
_GAP_REREADS = 2


class Sequence:
    """The member's position per partition, and the check of polled records against it.

    ``seek(partition, offset)`` has the member's consumer read a partition again from
    ``offset``.
    """

    def __init__(self, seek: Callable[[int, int], None]) -> None:
        self._seek = seek
        # partition -> the offset after the last record handed to the parent (or where it
        # was last sought to, possibly a logical offset): where reading must go on
        self.next: dict[int, int] = {}
        # (partition, offset) -> how often a gap there was read again, since the position
        # was last set
        self.gaps: dict[tuple[int, int], int] = {}

    def restart(self, positions: dict[int, int]) -> None:
        """A new assignment (or none): ``positions`` are where its partitions are read."""
        self.next = positions
        self.gaps = {}

    def sought(self, partition: int, offset: int) -> None:
        """The member sought ``partition`` to ``offset``."""
        self.next[partition] = offset
        self.gaps = {k: n for k, n in self.gaps.items() if k[0] != partition}

    def check(
        self,
        partitions: np.ndarray[Any, Any],
        offsets: np.ndarray[Any, Any],
        *,
        rebalanced: bool = False,
    ) -> Any:
        """Check that polled records go on where the last ones ended, per partition; the
        mask of records to hand over, or None for all of them.

        Only records of an assigned partition that continue its sequence are handed
        over: a poll that spans a rebalance returns records fetched for the old
        assignment ahead of the new one's (``rebalanced``), and they must neither
        reach a processor that no longer owns their partition nor move a position.

        * a partition no longer assigned: its records are dropped;
        * offsets going backwards within the poll: only the last run counts;
        * a record before the expected offset (delivered already) is dropped;
        * a gap (a record beyond the expected offset): the records from the gap on are
          dropped and the partition is read again from the expected offset. After a
          rebalance that is always so (the new assignment's records start exactly at
          its position; later ones are the old assignment's). Otherwise the same gap
          seen ``_GAP_REREADS`` + 1 times is taken as the log's own (compaction or
          transaction markers leave gaps in a real Kafka's offsets) and logged.
        """
        keep = np.ones(len(partitions), bool)
        for p in np.unique(partitions).tolist():
            where = np.flatnonzero(partitions == p)
            expected = self.next.get(p)
            if expected is None:
                logger.warning(
                    "partition %d: %d records of a partition no longer assigned dropped",
                    p,
                    len(where),
                )
                keep[where] = False
                continue
            back = np.flatnonzero(np.diff(offsets[where]) <= 0)
            if len(back):
                stale, where = where[: back[-1] + 1], where[back[-1] + 1 :]
                logger.warning(
                    "partition %d: %d records of an earlier position dropped", p, len(stale)
                )
                keep[stale] = False
            run = offsets[where]
            if expected < 0:  # a logical position (the beginning): nothing to compare
                if rebalanced:  # but the records may be the old assignment's
                    keep[where] = False
                    self._seek(p, expected)
                else:
                    self.next[p] = int(run[-1]) + 1
                continue
            keep[where[run < expected]] = False
            where, run = where[run >= expected], run[run >= expected]
            # the records that continue the sequence: a prefix of the run
            follows = int(np.count_nonzero(run == expected + np.arange(len(run))))
            if follows == len(run) or not self._read_again(
                p, expected + follows, int(run[follows]), rebalanced=rebalanced
            ):
                self.next[p] = max(expected, int(run[-1]) + 1) if len(run) else expected
                continue
            keep[where[follows:]] = False
            self.next[p] = expected + follows
        return None if keep.all() else keep

    def _read_again(self, p: int, gap: int, found: int, *, rebalanced: bool) -> bool:
        """Offsets ``gap`` to ``found - 1`` did not come: seek back to read them again
        (True), or take them as the log's own gap (False)."""
        after = found - 1
        if rebalanced:
            logger.info(
                "partition %d: records from offset %d on were fetched for an earlier "
                "assignment; reading from %d",
                p,
                found,
                gap,
            )
        else:
            seen = self.gaps.get((p, gap), 0)
            if seen >= _GAP_REREADS:
                logger.warning(
                    "partition %d: offsets %d-%d are not in the log (read %d times)",
                    p,
                    gap,
                    after,
                    seen + 1,
                )
                return False
            self.gaps[(p, gap)] = seen + 1
            logger.warning(
                "partition %d: the Kafka client skipped offsets %d-%d; reading them again",
                p,
                gap,
                after,
            )
        self._seek(p, gap)
        return True
