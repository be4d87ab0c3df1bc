"""Running a CLI command's Kafka work with clear errors instead of tracebacks."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import click
from aiokafka.errors import KafkaConnectionError, KafkaError

from hub.kafka.probe import connection_problem
from hub.kafka.topics import TopicMismatchError
from hub.settings import HubSettings

T = TypeVar("T")


def run_kafka_command(settings: HubSettings, work: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(work)``; Kafka failures become a one-line error with what to do."""
    try:
        return asyncio.run(work)
    except KafkaConnectionError as exc:
        problem = asyncio.run(connection_problem(settings))
        if problem is not None and problem.refused:
            raise click.ClickException(problem.message) from exc
        raise click.ClickException(
            f"cannot reach Kafka at {settings.kafka_bootstrap} "
            f"({problem.message if problem else exc}); start the local broker with "
            "`hub broker start` or point HUB_KAFKA_BOOTSTRAP at a running one"
        ) from exc
    except (KafkaError, TopicMismatchError, LookupError) as exc:
        raise click.ClickException(f"{settings.kafka_bootstrap}: {exc}") from exc
