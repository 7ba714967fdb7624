"""How a batch's record values and keys travel from the Kafka member to the processor.

A list of 200,000 ``bytes`` costs about 0.6 us per record to pickle and unpickle,
and the NDJSON parse joins them again anyway; :class:`Packed` holds them joined
from the start. Only numpy is imported here: the Kafka member process uses it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

import numpy as np

__all__ = ["Packed", "pack"]


def pack(items: Sequence[bytes | None]) -> tuple[bytes, np.ndarray[Any, Any]]:
    """``items`` joined by newlines, and their lengths (-1 for None); C-level loops
    unless there is a None among them."""
    n = len(items)
    if None in items:
        lengths = np.fromiter((-1 if x is None else len(x) for x in items), np.int64, n)
        return b"\n".join(x or b"" for x in items), lengths
    return b"\n".join(items), np.fromiter(map(len, items), np.int64, n)  # type: ignore[arg-type]


class Packed(Sequence[bytes | None]):
    r"""Byte strings joined by newlines in one ``bytes`` object, with their lengths (-1
    stands for None): how a batch's record values and keys travel from the Kafka member
    to the processor and into the NDJSON parse, without one Python object per record.

    >>> p = Packed.of([b'{"a":1}', None, b"xy"])
    >>> len(p), p[0], p[1], p[2], p.joined
    (3, b'{"a":1}', None, b'xy', b'{"a":1}\n\nxy')
    >>> p[1:].to_list(), Packed.concat([p[:1], p[2:]]).to_list()
    ([None, b'xy'], [b'{"a":1}', b'xy'])
    """

    __slots__ = ("_joined", "_parts", "_starts", "lengths")

    def __init__(self, joined: bytes, lengths: np.ndarray[Any, Any]) -> None:
        self._joined: bytes | None = joined
        self._parts: list[Packed] = []
        self.lengths = lengths
        self._starts: np.ndarray[Any, Any] | None = None

    @property
    def joined(self) -> bytes:
        """The items joined by newlines (those of a :meth:`concat` are joined when first
        asked for: a batch the Kafka member parsed is usually never asked)."""
        if self._joined is None:
            self._joined = b"\n".join(p.joined for p in self._parts)
            self._parts = []
        return self._joined

    @classmethod
    def of(cls, items: Sequence[bytes | None]) -> Packed:
        """``items`` packed (themselves when they already are)."""
        if isinstance(items, Packed):
            return items
        return cls(*pack(items))

    @classmethod
    def concat(cls, parts: Sequence[Packed]) -> Packed:
        """One Packed holding ``parts`` one after the other."""
        filled = [p for p in parts if len(p)]
        if len(filled) == 1:
            return filled[0]
        if not filled:
            return cls(b"", np.empty(0, np.int64))
        packed = cls(b"", np.concatenate([p.lengths for p in filled]))
        packed._joined, packed._parts = None, filled
        return packed

    @property
    def starts(self) -> np.ndarray[Any, Any]:
        """Where each item starts in :attr:`joined` (one more entry: the end + 1)."""
        if self._starts is None:
            self._starts = np.concatenate(([0], np.cumsum(np.maximum(self.lengths, 0) + 1)))
        return self._starts

    @property
    def has_empty(self) -> bool:
        """Whether an item is None or empty (a line the NDJSON parse would not count)."""
        return bool((self.lengths <= 0).any())

    def __len__(self) -> int:
        return len(self.lengths)

    @overload
    def __getitem__(self, index: int) -> bytes | None: ...

    @overload
    def __getitem__(self, index: slice) -> Packed: ...

    def __getitem__(self, index: int | slice) -> bytes | Packed | None:
        if isinstance(index, slice):
            a, b, step = index.indices(len(self))
            if step != 1:
                raise ValueError("Packed slices take every item")
            b = max(a, b)
            start, end = int(self.starts[a]), int(self.starts[b]) - 1
            return Packed(self.joined[start : max(start, end)], self.lengths[a:b])
        length = int(self.lengths[index])
        if length < 0:
            return None
        start = int(self.starts[index])
        return self.joined[start : start + length]

    def to_list(self) -> list[bytes | None]:
        """The items as a list of bytes (None where there was None)."""
        return [self[i] for i in range(len(self))]
