"""The Kafka frame log on confluent-kafka (librdkafka): Apache Kafka, Redpanda, managed Kafka, tansu.

URL: ``kafka://host:9092[,host2:9092][?option=value&...]``; the options (visionlake's own and
librdkafka settings passed through) are described in `options`.

Modules: `options` (URL, options, librdkafka settings), `log` (`KafkaLog`: connection, topics,
groups, retention), `offsets` (start, end and by-time offsets), `producer` (`KafkaProducer`),
`consumer` (`KafkaConsumer`), `errors` (librdkafka errors as visionlake errors). How each part of the
contract maps onto Kafka is told next to the code; across them:

* Durability order: the producer is idempotent (no duplicates or reordering on retries), `flush`
  waits for every acknowledgement and raises if any record failed; consumers never auto-commit, and
  `commit` is synchronous, so a worker commits only after its results are durable.
* Broker outages: librdkafka reconnects with backoff by itself. Produced records stay queued and are
  retried for ``delivery_timeout``; `flush()` waits that long (logging while it waits) before raising
  BackendUnavailable, and the records stay queued if it does. Consumers keep polling (empty batches)
  and resume where they were; `commit` retries retriable errors for ``delivery_timeout``. A partition
  that moved to another member during the outage is left out of the commit (its new owner
  reprocesses from the last commit; the catalog writes are idempotent).
"""

from .consumer import KafkaConsumer
from .log import KafkaLog
from .options import HOST, MAX_REQUEST_BYTES, OPTIONS, RECORD_OVERHEAD, parse_url
from .producer import KafkaProducer

__all__ = [
    "HOST",
    "MAX_REQUEST_BYTES",
    "OPTIONS",
    "RECORD_OVERHEAD",
    "KafkaConsumer",
    "KafkaLog",
    "KafkaProducer",
    "parse_url",
]
