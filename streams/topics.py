"""The catalogue of topics the pipeline reads and writes, with their configs.

``cci topics create`` makes all of them up front (internal ones too) with explicit configs, so
partition counts and retention are decided here rather than by whichever client touches a topic
first.
"""

from __future__ import annotations

from streams.kafka.admin import TopicSpec
from streams.settings import (
    TOPIC_ACTIVITY,
    TOPIC_ALERTS,
    TOPIC_DEAD_LETTERS,
    TOPIC_PROFILES,
    TOPIC_TICKETS,
    TOPIC_UPDATES,
    Settings,
)

DAY_MS = 24 * 3600 * 1000


def internal_topic_names(app_id: str) -> dict[str, str]:
    return {"facts": f"{app_id}-facts", "partials": f"{app_id}-partials"}


def changelog_topic(app_id: str) -> str:
    """The dedup table's changelog, which the sink also reads (deduplicated facts)."""
    return f"{app_id}-dedup-changelog"


def ingest_group(app_id: str) -> str:
    return f"{app_id}-ingest"


def topic_catalogue(settings: Settings) -> dict[str, TopicSpec]:
    def spec(cleanup: str, retention_days: int | None) -> TopicSpec:
        configs = {"cleanup.policy": cleanup}
        configs["retention.ms"] = str(retention_days * DAY_MS) if retention_days else "-1"
        return TopicSpec(settings.partitions, settings.replication_factor, configs)

    # Inputs are kept a little longer than the retained months, so a new app id can replay them.
    input_days = 31 * (settings.retain_months + 1)
    internal = internal_topic_names(settings.app_id)
    return {
        TOPIC_ACTIVITY: spec("delete", input_days),
        TOPIC_TICKETS: spec("delete", input_days),
        TOPIC_PROFILES: spec("compact", None),
        TOPIC_UPDATES: spec("compact", None),
        TOPIC_DEAD_LETTERS: spec("delete", 30),
        TOPIC_ALERTS: spec("compact", None),
        internal["facts"]: spec("delete", 7),
        internal["partials"]: spec("delete", 7),
        changelog_topic(settings.app_id): spec("compact", None),
        f"{settings.app_id}-month-partials-changelog": spec("compact", None),
    }
