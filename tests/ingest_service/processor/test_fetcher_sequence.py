"""The librdkafka member's check that polled records go on where the last ones ended
(pure logic: the member's seeks are recorded, no broker)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from ingest_service.processor.fetcher.sequence import Sequence


class _Seeks:
    def __init__(self) -> None:
        self.sought: list[tuple[int, int]] = []

    def seek(self, partition: int, offset: int) -> None:
        self.sought.append((partition, offset))


def _member(next_offsets: dict[int, int]) -> tuple[Sequence, _Seeks]:
    seeks = _Seeks()
    sequence = Sequence(seeks.seek)
    sequence.restart(dict(next_offsets))
    return sequence, seeks


def _check(member: Sequence, pairs: list[tuple[int, int]], *, rebalanced: bool = False) -> Any:
    partitions = np.array([p for p, _ in pairs], np.int32)
    offsets = np.array([o for _, o in pairs], np.int64)
    return member.check(partitions, offsets, rebalanced=rebalanced)


def test_records_in_sequence_are_all_handed_over():
    member, seeks = _member({0: 10, 1: 0})
    assert _check(member, [(0, 10), (1, 0), (0, 11), (1, 1)]) is None
    assert member.next == {0: 12, 1: 2}
    assert seeks.sought == []


def test_a_logical_start_takes_the_first_records_offsets():
    member, _ = _member({0: -2})  # OFFSET_BEGINNING
    assert _check(member, [(0, 7), (0, 8)]) is None
    assert member.next == {0: 9}


def test_a_skipped_batch_is_read_again_and_the_records_after_it_are_held_back(caplog):
    member, seeks = _member({0: 100, 1: 50})
    with caplog.at_level(logging.WARNING):
        keep = _check(member, [(0, 114), (0, 115), (1, 50)])
    assert keep.tolist() == [False, False, True]
    assert seeks.sought == [(0, 100)]
    assert member.next == {0: 100, 1: 51}
    assert "partition 0: the Kafka client skipped offsets 100-113; reading them again" in (
        caplog.text
    )
    # read again: the batch comes now
    assert _check(member, [(0, 100), (0, 101)]) is None
    assert member.next[0] == 102


def test_the_same_gap_three_times_is_the_logs_own(caplog):
    member, seeks = _member({0: 100})
    assert _check(member, [(0, 114)]).tolist() == [False]
    assert _check(member, [(0, 114)]).tolist() == [False]
    with caplog.at_level(logging.WARNING):
        keep = _check(member, [(0, 114), (0, 115)])
    assert keep is None
    assert seeks.sought == [(0, 100), (0, 100)]  # read again twice
    assert member.next == {0: 116}
    assert "offsets 100-113 are not in the log (read 3 times)" in caplog.text


def test_a_gap_inside_a_poll_keeps_the_records_before_it():
    member, seeks = _member({0: 10})
    keep = _check(member, [(0, 10), (0, 11), (0, 15), (0, 16)])
    assert keep.tolist() == [True, True, False, False]
    assert member.next == {0: 12}
    assert seeks.sought == [(0, 12)]


def test_records_of_a_partition_no_longer_assigned_are_dropped(caplog):
    # a poll spanning a rebalance: partition 1 went to another member
    member, seeks = _member({0: 5})
    with caplog.at_level(logging.WARNING):
        keep = _check(member, [(1, 40), (1, 41), (0, 5)], rebalanced=True)
    assert keep.tolist() == [False, False, True]
    assert member.next == {0: 6}
    assert seeks.sought == []
    assert "partition 1: 2 records of a partition no longer assigned dropped" in caplog.text


def test_after_a_rebalance_records_beyond_the_position_are_the_old_assignments():
    # fetched before the rebalance, delivered after it: never a gap of the log, however
    # often it happens
    member, seeks = _member({0: 90})
    for _ in range(5):
        assert _check(member, [(0, 120), (0, 121)], rebalanced=True).tolist() == [False, False]
    assert member.next == {0: 90}
    assert seeks.sought == [(0, 90)] * 5
    assert member.gaps == {}
    # those in sequence are the same records, whichever assignment fetched them
    assert _check(member, [(0, 90), (0, 91)], rebalanced=True) is None
    assert member.next == {0: 92}


def test_after_a_rebalance_a_logical_position_is_sought_again():
    member, seeks = _member({0: -2})  # OFFSET_BEGINNING: the records cannot be checked
    assert _check(member, [(0, 30), (0, 31)], rebalanced=True).tolist() == [False, False]
    assert seeks.sought == [(0, -2)]
    assert member.next == {0: -2}


@pytest.mark.parametrize("first", [95, 99])
def test_records_delivered_already_are_dropped(first: int):
    member, seeks = _member({0: 100})
    keep = _check(member, [(0, o) for o in range(first, 103)])
    assert keep.tolist() == [o >= 100 for o in range(first, 103)]
    assert member.next == {0: 103}
    assert seeks.sought == []


def test_records_from_before_a_rebalance_ahead_of_the_new_ones_are_dropped(caplog):
    # a poll got offset 100 for the old assignment, then the rebalance sought back to 90
    member, seeks = _member({0: 90, 1: 7})
    with caplog.at_level(logging.WARNING):
        keep = _check(member, [(0, 100), (1, 7), (0, 90), (0, 91), (1, 8)])
    assert keep.tolist() == [False, True, True, True, True]
    assert member.next == {0: 92, 1: 9}
    assert seeks.sought == []
    assert "partition 0: 1 records of an earlier position dropped" in caplog.text
