"""confluent_kafka at the edge: importing it, and its errors in visionlake's terms."""

from __future__ import annotations

import functools
from typing import Any

from ...errors import (
    BackendUnavailable,
    InputError,
    LogError,
    MissingDependency,
    RecordTooLarge,
    UnknownTopic,
    VisionlakeError,
)


def import_kafka() -> Any:
    """confluent_kafka, imported on first use (it is an optional extra)."""
    try:
        import confluent_kafka
        import confluent_kafka.admin  # noqa: F401
    except ImportError as e:
        raise MissingDependency("the Kafka frame log", "kafka", "confluent_kafka") from e
    return confluent_kafka


def to_error(ck: Any, url: str, err: Any, what: str) -> VisionlakeError:
    """A visionlake error for a librdkafka error (KafkaError or exception)."""
    if isinstance(err, ck.KafkaException) and err.args:
        err = err.args[0]
    if not isinstance(err, ck.KafkaError):
        return BackendUnavailable(f"{what}: Kafka at {url} did not answer: {message(err)}")
    code = err.code()
    if code in unavailable_codes(ck) or err.retriable():
        return BackendUnavailable(f"{what}: Kafka at {url} is unavailable: {err.str()}")
    if code in (ck.KafkaError._UNKNOWN_TOPIC, ck.KafkaError.UNKNOWN_TOPIC_OR_PART):
        return UnknownTopic(f"{what}: unknown topic on {url}: {err.str()}")
    if code in (ck.KafkaError.MSG_SIZE_TOO_LARGE, getattr(ck.KafkaError, "_MSG_SIZE_TOO_LARGE", None)):
        return RecordTooLarge(f"{what}: record too large for {url}: {err.str()}")
    if code in auth_codes(ck):
        return LogError(f"{what}: not allowed by {url} (check the security settings): {err.str()}")
    return LogError(f"{what} failed on {url}: {err.str()}")


def first_error(e: Any) -> Any:
    """The KafkaError a KafkaException carries; None when it carries none."""
    return e.args[0] if e.args else None


def message(e: object) -> str:
    if hasattr(e, "args") and getattr(e, "args", None) and hasattr(e.args[0], "str"):  # type: ignore[attr-defined]
        return e.args[0].str()  # type: ignore[attr-defined]
    if hasattr(e, "str"):
        return e.str()  # type: ignore[attr-defined]
    return str(e)


def check_partition(topic: str, partition: int, partitions: int) -> None:
    if not 0 <= partition < partitions:
        raise InputError(f"topic {topic!r} has partitions 0-{partitions - 1}, not {partition}")


# -- error code sets ------------------------------------------------------------------------------


def _codes(ck: Any, *names: str) -> frozenset:
    """The codes of those KafkaError names this confluent_kafka knows."""
    e = ck.KafkaError
    return frozenset(getattr(e, n) for n in names if hasattr(e, n))


@functools.cache
def unavailable_codes(ck: Any) -> frozenset:
    return _codes(
        ck,
        "_TRANSPORT",
        "_ALL_BROKERS_DOWN",
        "_TIMED_OUT",
        "_TIMED_OUT_QUEUE",
        "_MSG_TIMED_OUT",
        "_RESOLVE",
        "_WAIT_COORD",
        "_NOENT",
        "REQUEST_TIMED_OUT",
        "NETWORK_EXCEPTION",
        "NOT_COORDINATOR",
        "COORDINATOR_NOT_AVAILABLE",
        "COORDINATOR_LOAD_IN_PROGRESS",
        "LEADER_NOT_AVAILABLE",
        "NOT_LEADER_FOR_PARTITION",
        "BROKER_NOT_AVAILABLE",
    )


@functools.cache
def rebalance_codes(ck: Any) -> frozenset:
    return _codes(
        ck,
        "REBALANCE_IN_PROGRESS",
        "ILLEGAL_GENERATION",
        "UNKNOWN_MEMBER_ID",
        "_ASSIGNMENT_LOST",
        "FENCED_INSTANCE_ID",
    )


@functools.cache
def auth_codes(ck: Any) -> frozenset:
    return _codes(
        ck,
        "_AUTHENTICATION",
        "_SSL",
        "SASL_AUTHENTICATION_FAILED",
        "TOPIC_AUTHORIZATION_FAILED",
        "GROUP_AUTHORIZATION_FAILED",
        "CLUSTER_AUTHORIZATION_FAILED",
    )
