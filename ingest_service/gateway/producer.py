"""kafka-python's producer behind an asyncio face.

``send_all`` answers once the broker acknowledged *every* record of a request
(``acks="all"``), without one Python callback per event:

1. once the topic's metadata is known, records are handed to ``send`` right on
   the event loop (``send`` only blocks while metadata is missing or the
   buffer is full; the first is handled on a worker thread, the second cannot
   happen because ``gateway_max_inflight`` bounds what is buffered);
2. kafka-python groups records into one batch per partition, and every
   record's future resolves from its batch's future: the request waits on the
   *distinct batch futures* (usually one per partition touched), and a batch
   that reports per-record errors fails the whole request;
3. a failure or a timeout opens a short circuit so that further requests are
   refused at once with 503 instead of piling up behind a dead broker, and the
   next request builds a fresh producer: an idempotent producer whose broker
   restarted (and forgot its producer id) aborts every later batch for good.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from ingest_service.gateway.validation import Problem
from workbench.config import Config

__all__ = ["AsyncProducer"]

logger = logging.getLogger(__name__)

_RETRY_AFTER_S = 2


class _BatchFailed(Exception):
    """The broker stored the batch but refused some of its records."""


class AsyncProducer:
    """Produce records and await their acks without blocking the event loop."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="produce")
        self._producer: Any = None
        self._ready = False  # topic metadata known: send() will not block
        self._stale = False  # the producer failed: replace it before the next send
        self._down_until = 0.0
        self.inflight = 0

    @property
    def healthy(self) -> bool:
        """False while the circuit is open after a broker failure."""
        return time.monotonic() >= self._down_until

    def _open_circuit(self, why: str) -> Problem:
        self._down_until = time.monotonic() + _RETRY_AFTER_S
        self._ready = False  # the next send goes through _ensure on the worker thread
        self._stale = True
        logger.warning("broker unavailable: %s", why)
        return Problem(
            503,
            "broker_unavailable",
            f"the event broker is not acknowledging writes ({why}); nothing was stored",
            retry_after=_RETRY_AFTER_S,
        )

    def _ensure(self) -> Any:
        if self._stale and self._producer is not None:
            old, self._producer = self._producer, None
            logger.info("replacing the Kafka producer after a failure")
            try:
                old.close(timeout=0)  # its unsent batches fail: their requests get 503
            except Exception:
                logger.debug("closing the failed producer", exc_info=True)
        self._stale = False
        if self._producer is None:
            from kafka import KafkaProducer

            from workbench.kafka import client_settings, no_topic_auto_creation

            timeout_ms = int(self.config.gateway_ack_timeout * 1000)
            self._producer = KafkaProducer(
                **client_settings(self.config),
                client_id="workbench-gateway",
                # a restarted in-memory broker has no topic until 'workbench up' makes it
                # with WORKBENCH_TOPIC_PARTITIONS; asking for it must not create it first
                # with the broker's default count (until then requests get 503)
                allow_auto_create_topics=False,
                acks="all",
                # fewer, bigger batches: the embedded broker's fetch cost grows with the
                # batches it holds (docs/operations.md); 5 ms or less costs more CPU per
                # single-event request (docs/gateway.md)
                linger_ms=self.config.gateway_linger_ms,
                batch_size=256 * 1024,
                max_block_ms=timeout_ms,
                request_timeout_ms=timeout_ms,
                delivery_timeout_ms=timeout_ms + 1000,
                retries=3,
                max_in_flight_requests_per_connection=5,
            )
            no_topic_auto_creation(self._producer)
        if not self._ready:
            self._producer.partitions_for(self.config.topic)  # blocks until metadata is known
            self._ready = True
        return self._producer

    def start(self) -> concurrent.futures.Future[Any]:
        """Connect in the background (warms metadata so the first request is not slow)."""
        return self._executor.submit(self._ensure)

    def _send(
        self,
        records: Sequence[tuple[bytes, bytes]],
        loop: asyncio.AbstractEventLoop,
        done: asyncio.Future[None],
    ) -> None:
        """Hand every record to the producer; settle ``done`` when all their batches are acked.

        Runs on the loop thread once ready, else on the worker thread.
        """
        producer = self._ensure()
        topic = self.config.topic
        send = producer.send
        batches: dict[int, Any] = {}
        for key, value in records:
            future = send(topic, key=key, value=value)
            batch = getattr(future, "_produce_future", future)  # kafka-python internals
            batches[id(batch)] = batch
        left = [len(batches)]

        def settle(exc: BaseException | None) -> None:
            if done.done():
                return
            if exc is not None:
                done.set_exception(exc)
                return
            left[0] -= 1
            if left[0] == 0:
                done.set_result(None)

        def on_ok(result: Any) -> None:
            # a batch future's result is (offset, timestamp, record_errors or None)
            failed = isinstance(result, tuple) and len(result) == 3 and result[2] is not None
            exc = _BatchFailed("the broker refused records of the batch") if failed else None
            loop.call_soon_threadsafe(settle, exc)

        def on_err(exc: BaseException) -> None:
            loop.call_soon_threadsafe(settle, exc)

        for batch in batches.values():
            batch.add_callback(on_ok)
            batch.add_errback(on_err)

    async def send_all(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Produce ``(key, value)`` records; return once all are acknowledged, else raise a
        429/503 :class:`Problem`."""
        n = len(records)
        if self.inflight + n > self.config.gateway_max_inflight:
            raise Problem(
                429,
                "overloaded",
                f"{self.inflight} events are awaiting the broker; slow down",
                retry_after=1,
            )
        if not self.healthy:
            raise Problem(
                503,
                "broker_unavailable",
                "the event broker is unavailable; nothing was stored",
                retry_after=_RETRY_AFTER_S,
            )
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self.inflight += n
        try:
            try:
                if self._ready:
                    self._send(records, loop, done)
                else:
                    await loop.run_in_executor(self._executor, self._send, records, loop, done)
                await asyncio.wait_for(
                    asyncio.shield(done), timeout=self.config.gateway_ack_timeout
                )
            except TimeoutError:
                raise self._open_circuit(
                    f"no ack within {self.config.gateway_ack_timeout:.0f}s"
                ) from None
            except Problem:
                raise
            except Exception as exc:
                raise self._open_circuit(f"{type(exc).__name__}: {exc}") from None
        finally:
            self.inflight -= n

    def note(
        self, key: bytes, value: bytes, delivered: Callable[[bool], None] | None = None
    ) -> bool:
        """Hand one record to the producer and return without waiting for its ack: for
        what the gateway tells the processor of its own accord (a refusal), never on an
        answer's path. False (nothing sent) while the producer is not connected or its
        circuit is open, or the buffer holds a full load of requests' events. Once
        handed over, ``delivered`` is called (on the producer's thread) with whether the
        broker acknowledged it (False: the delivery failed or timed out)."""
        if not self._ready or not self.healthy or self._producer is None:
            return False
        if self.inflight >= self.config.gateway_max_inflight:
            return False
        try:
            future = self._producer.send(self.config.topic, key=key, value=value)
        except Exception as exc:  # a note is best effort: the request was answered
            logger.debug("a note to the topic was not sent: %s", exc)
            return False
        if delivered is not None:
            future.add_callback(lambda _: delivered(True))
            future.add_errback(lambda _: delivered(False))
        return True

    def close(self) -> None:
        """Flush and close the producer (blocking)."""
        if self._producer is not None:
            try:
                self._producer.flush(timeout=self.config.gateway_ack_timeout)
                self._producer.close(timeout=5)
            except Exception:  # closing a producer whose broker is gone
                logger.warning("producer close failed", exc_info=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
