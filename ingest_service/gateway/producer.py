"""kafka-python's producer behind an asyncio face.

``send_all`` hands a batch to the producer on one worker thread (``send`` may
block on metadata) and resolves once the broker acknowledged *every* record
(``acks="all"``). A failure opens a short circuit so that further requests are
refused at once with 503 instead of piling up behind a dead broker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from ingest_service.gateway.validation import Problem
from workbench.config import Config

__all__ = ["AsyncProducer"]

logger = logging.getLogger(__name__)

_RETRY_AFTER_S = 2


class AsyncProducer:
    """Produce records and await their acks without blocking the event loop."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="produce")
        self._producer: Any = None
        self._down_until = 0.0
        self.inflight = 0

    @property
    def healthy(self) -> bool:
        """False while the circuit is open after a broker failure."""
        return time.monotonic() >= self._down_until

    def _open_circuit(self, why: str) -> Problem:
        self._down_until = time.monotonic() + _RETRY_AFTER_S
        logger.warning("broker unavailable: %s", why)
        return Problem(
            503,
            "broker_unavailable",
            f"the event broker is not acknowledging writes ({why}); nothing was stored",
            retry_after=_RETRY_AFTER_S,
        )

    def _ensure(self) -> Any:
        if self._producer is None:
            from kafka import KafkaProducer

            timeout_ms = int(self.config.gateway_ack_timeout * 1000)
            self._producer = KafkaProducer(
                bootstrap_servers=self.config.bootstrap_servers,
                client_id="workbench-gateway",
                acks="all",
                linger_ms=2,
                batch_size=256 * 1024,
                max_block_ms=timeout_ms,
                request_timeout_ms=timeout_ms,
                delivery_timeout_ms=timeout_ms + 1000,
                retries=3,
                max_in_flight_requests_per_connection=5,
            )
            self._producer.partitions_for(self.config.topic)
        return self._producer

    def start(self) -> concurrent.futures.Future[Any]:
        """Connect in the background (warms metadata so the first request is not slow)."""
        return self._executor.submit(self._ensure)

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
        lock = threading.Lock()
        left = [n]

        def settle(exc: BaseException | None) -> None:
            if not done.done():
                if exc is None:
                    done.set_result(None)
                else:
                    done.set_exception(exc)

        def on_ok(_: Any) -> None:
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                loop.call_soon_threadsafe(settle, None)

        def on_err(exc: BaseException) -> None:
            loop.call_soon_threadsafe(settle, exc)

        def send() -> None:
            producer = self._ensure()
            topic = self.config.topic
            for key, value in records:
                future = producer.send(topic, key=key, value=value)
                future.add_callback(on_ok)
                future.add_errback(on_err)

        self.inflight += n
        try:
            try:
                await loop.run_in_executor(self._executor, send)
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

    def close(self) -> None:
        """Flush and close the producer."""
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except Exception:  # closing a producer whose broker is gone
                logger.warning("producer close failed", exc_info=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
