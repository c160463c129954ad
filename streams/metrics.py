"""Prometheus metrics of the worker (served at ``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

registry = CollectorRegistry()

events_consumed = Counter(
    "cci_events_consumed_total", "Input records consumed", ["topic"], registry=registry
)
dead_letters = Counter(
    "cci_dead_letters_total",
    "Input records sent to the dead-letter topic",
    ["reason"],
    registry=registry,
)
inactive_activities = Counter(
    "cci_inactive_activities_total",
    "Valid activities whose type does not make a user active (CCI_ACTIVE_ACTIVITIES)",
    registry=registry,
)
repeat_facts = Counter(
    "cci_repeat_facts_total",
    "Facts that changed nothing: resent events, duplicates, later activity of an active user",
    ["kind"],
    registry=registry,
)
invalid_profiles = Counter(
    "cci_invalid_profiles_total", "Profiles that failed validation", ["reason"], registry=registry
)
partials_published = Counter(
    "cci_partials_published_total", "Partial-count records published", registry=registry
)
stale_partials = Counter(
    "cci_stale_partials_total",
    "Partial counts ignored because a newer one for the same partition was already applied",
    registry=registry,
)
updates_emitted = Counter(
    "cci_updates_emitted_total", "Records emitted to cci-updates", registry=registry
)
user_months = Gauge(
    "cci_user_months", "Distinct active user-months held in dedup state", registry=registry
)
current_cci = Gauge(
    "cci_current",
    "Latest CCI per month, dimension and segment",
    ["month", "dimension", "segment"],
    registry=registry,
)
