"""`KafkaProducer`: idempotent writes, acknowledged by `flush`.

* Partitioning: the producer always chooses the partition itself with `partition_for` (CRC32 of the
  key, the same as librdkafka's ``consistent`` partitioner and the embedded log), so a camera lands in
  the same partition on either backend and a plain librdkafka producer agrees with both.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from ...errors import BackendUnavailable
from ...types import Headers, RecordMetadata
from ..base import Producer, check_record_size, partition_for
from .errors import check_partition
from .options import MAX_REQUEST_BYTES

if TYPE_CHECKING:
    from .log import KafkaLog

log = logging.getLogger("visionlake.log.kafka")


class KafkaProducer(Producer):
    """An idempotent librdkafka producer; `flush` waits for every acknowledgement."""

    def __init__(self, log_: KafkaLog) -> None:
        self.log = log_
        self._p = log_._client(
            log_._ck.Producer,
            "producer",
            {"linger.ms": 5, "message.max.bytes": MAX_REQUEST_BYTES},
            {"enable.idempotence": True, "message.timeout.ms": int(log_.delivery_timeout * 1000)},
        )
        self._topics: dict[str, tuple[int, int]] = {}  # name -> (partitions, value limit)
        self._results: list[Any] = []  # RecordMetadata | KafkaError | None, in send order
        self._rr = 0
        self._lock = threading.Lock()

    def _topic(self, name: str) -> tuple[int, int]:
        info = self._topics.get(name)
        if info is None:
            self.log.ensure_topic(name)  # created with the log's defaults, as the embedded log does
            cfg = self.log.topic_config(name)
            info = self._topics[name] = (cfg.partitions, cfg.max_record_bytes)
        return info

    def _delivered(self, idx: int, topic: str, err: Any, msg: Any) -> None:
        self._results[idx] = err if err is not None else RecordMetadata(topic, msg.partition(), msg.offset())

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        nparts, limit = self._topic(topic)
        check_record_size(topic, value, limit)
        if partition is None:
            partition = partition_for(key, nparts, self._rr)
            self._rr += 1
        else:
            check_partition(topic, partition, nparts)
        with self._lock:
            idx = len(self._results)
            self._results.append(None)
            callback = functools.partial(self._delivered, idx, topic)
            waited = time.monotonic()
            while True:
                try:
                    self._p.produce(
                        self.log._full(topic),
                        value=value,
                        key=key,
                        partition=partition,
                        headers=list(headers) if headers else None,
                        timestamp=int(timestamp_ms) if timestamp_ms is not None else 0,
                        on_delivery=callback,
                    )
                    break
                except BufferError:  # librdkafka's queue is full (brokers slow or down): wait for room
                    self._p.poll(0.1)
                    if time.monotonic() - waited > self.log.delivery_timeout:
                        self._results.pop()
                        raise BackendUnavailable(
                            f"Kafka at {self.log.url} accepted nothing for {self.log.delivery_timeout:g} s"
                        ) from None
                except self.log._ck.KafkaException as e:
                    self._results.pop()
                    raise self.log._error(e, f"sending to topic {topic!r}") from None
            self._p.poll(0)

    def flush(self, timeout: float | None = None) -> list[RecordMetadata]:
        """Wait for every queued record (default: up to the log's delivery_timeout); raises if any failed.

        Records not acknowledged in time stay queued (librdkafka keeps retrying them until
        delivery_timeout), so calling flush again picks up where this one stopped.
        """
        with self._lock:
            wait = self.log.delivery_timeout if timeout is None else max(0.0, timeout)
            deadline = time.monotonic() + wait
            remaining = self._p.flush(min(wait, 5.0))
            while remaining and time.monotonic() < deadline:
                log.warning(
                    "waiting for Kafka at %s to acknowledge %d records (retrying)", self.log.url, remaining
                )
                remaining = self._p.flush(min(5.0, max(0.0, deadline - time.monotonic())))
            if remaining:
                raise BackendUnavailable(
                    f"Kafka at {self.log.url} acknowledged {len(self._results) - remaining} of "
                    f"{len(self._results)} records within {wait:g} s; the rest stay queued and are retried"
                )
            results, self._results = self._results, []
        failed = [r for r in results if not isinstance(r, RecordMetadata)]
        if failed:
            first = failed[0]
            err = self.log._error(first, f"{len(failed)} of {len(results)} records were not written")
            raise err
        return results

    def close(self) -> None:
        self.flush()
