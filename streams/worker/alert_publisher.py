"""The worker's side of alerts: published states read back from ``cci-alerts``, new ones sent.

The rules and the state machine are in ``streams/pipeline/alerts.py``; this keeps the book in step
with the topic (loaded fully before the first evaluation, followed afterwards, caught up after every
rebalance) and sends what the book asks for.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from mode import Service

from streams import metrics
from streams.kafka.follow import TopicFollower
from streams.pipeline.alerts import AlertBook, Figure
from streams.settings import TOPIC_ALERTS, Settings


class AlertPublisher(Service):
    """The alert book, kept in step with ``cci-alerts`` by a follower (a dependency: started and
    stopped with it), and the sending of what it asks for."""

    def __init__(self, settings: Settings, topic: Any) -> None:
        super().__init__()
        self.topic = topic  # the Faust topic cci-alerts
        self.book = AlertBook(settings.alert_rules)
        self.follower: TopicFollower | None = None
        if settings.alert_rules.rules:
            self.follower = self.add_dependency(
                TopicFollower(
                    settings.kafka_bootstrap,
                    TOPIC_ALERTS,
                    self.book.apply,
                    settings.kafka_client_kwargs(),
                    true_ends=bool(settings.embedded_broker),
                )
            )

    @property
    def ready(self) -> bool:
        """Every published state is known: evaluating now repeats nothing."""
        return self.follower is None or self.follower.in_sync.is_set()

    def catch_up(self) -> None:
        """After a rebalance: read what the previous owner of a month published before judging."""
        if self.follower is not None:
            self.follower.catch_up()

    def forget_months_before(self, oldest_label: str) -> None:
        self.book.forget_months_before(oldest_label)

    async def publish(self, figure: Figure, now: datetime) -> None:
        for key, value in self.book.evaluate(figure, now):
            await self.topic.send(key=key.encode(), value=orjson.dumps(value))
            metrics.alerts_emitted.labels(value["rule"], value["state"]).inc()
