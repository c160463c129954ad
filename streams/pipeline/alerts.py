"""Alert rules on the published figures, and the records they put on ``cci-alerts``.

A rule watches one dimension's segment (or every segment, ``*``) and fires when the CCI is above
a threshold (customers need too much help) or below one (support is too hard to reach). Each
(rule, month, dimension, segment) is one alert with its own state; a record is published only when
that state changes, so a figure republished after a restart or rebalance emits nothing new.

Nothing here imports Faust or Kafka: the worker feeds the book the records it reads back from
``cci-alerts`` (``AlertBook.apply``) and the figures it publishes (``AlertBook.evaluate``).
"""

from __future__ import annotations

import logging
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from streams import domain
from streams.pipeline.emit import Versions, rfc3339

log = logging.getLogger(__name__)

Condition = Literal["above", "below"]
State = Literal["firing", "cleared"]
ABOVE: Condition = "above"
BELOW: Condition = "below"
FIRING: State = "firing"
CLEARED: State = "cleared"
WILDCARD = "*"

# A rule name is the first part of the record key "{rule}|{month}|{dimension}|{segment}".
_RULE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_RULE_FIELDS = ("name", "dimension", "segment", "above", "below", "min_active_users")
_REQUIRED_FIELDS = ("name", "dimension", "segment")


class RulesError(ValueError):
    """The rules file is unusable; the message names the file, the rule and the field."""


@dataclass(frozen=True)
class Figure:
    """One published figure: what a rule looks at."""

    month: str  # YYYY-MM
    dimension: str
    segment: str
    tickets: int
    active_users: int
    cci: float | None


@dataclass(frozen=True)
class Rule:
    name: str
    dimension: str
    segment: str  # a segment, or WILDCARD for every segment of the dimension
    above: float | None = None
    below: float | None = None
    min_active_users: int = 0

    def matches(self, dimension: str, segment: str) -> bool:
        return self.dimension == dimension and self.segment in (WILDCARD, segment)

    def threshold(self, condition: Condition) -> float:
        value = self.above if condition == ABOVE else self.below
        assert value is not None, (self.name, condition)
        return value

    def condition(self, figure: Figure) -> Condition | None:
        """The threshold the figure breaks, or None (ok); too few users or no CCI count as ok."""
        if figure.cci is None or figure.active_users < self.min_active_users:
            return None
        if self.above is not None and figure.cci > self.above:
            return ABOVE
        if self.below is not None and figure.cci < self.below:
            return BELOW
        return None


@dataclass(frozen=True)
class AlertRules:
    """The rules of one file (``CCI_ALERT_RULES``); no path and no rules when unset."""

    path: Path | None = None
    rules: tuple[Rule, ...] = ()

    def __str__(self) -> str:
        return "" if self.path is None else str(self.path)

    def matching(self, dimension: str, segment: str) -> list[Rule]:
        return [rule for rule in self.rules if rule.matches(dimension, segment)]


# --- the rules file ------------------------------------------------------------------------------


def load_rules(path: Path) -> AlertRules:
    """Read and validate a TOML rules file (one ``[[rule]]`` table per rule)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise RulesError(f"{path}: cannot read the rules file: {reason}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{path}: not valid TOML: {exc}") from None
    return AlertRules(path, parse_rules(document, str(path)))


def parse_rules(document: Mapping[str, Any], source: str) -> tuple[Rule, ...]:
    """Rules from a parsed document; ``source`` prefixes every error message."""
    unknown = sorted(set(document) - {"rule"})
    if unknown:
        raise RulesError(f"{source}: unknown top-level key {unknown[0]!r} (rules are [[rule]])")
    tables = document.get("rule")
    if not isinstance(tables, list) or not tables:
        raise RulesError(f"{source}: no rules: write each rule as a [[rule]] table")
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for number, table in enumerate(tables, start=1):
        rule = _parse_rule(table, f"{source}: rule {number}")
        if rule.name in seen:
            raise RulesError(
                f"{source}: rule {number} ({rule.name!r}): field 'name': {rule.name!r} is already "
                f"the name of rule {seen[rule.name]}"
            )
        seen[rule.name] = number
        rules.append(rule)
    return tuple(rules)


def check_dimensions(rules: AlertRules, extra_dimensions: Sequence[str]) -> None:
    """Every rule's dimension is one the worker publishes (a typo would never fire)."""
    known = (domain.ALL, *domain.user_dimensions(extra_dimensions), domain.CHANNEL)
    for number, rule in enumerate(rules.rules, start=1):
        if rule.dimension not in known:
            raise RulesError(
                f"{rules.path}: rule {number} ({rule.name!r}): field 'dimension': "
                f"{rule.dimension!r} is not a dimension ({', '.join(known)}; "
                "more with CCI_EXTRA_DIMENSIONS)"
            )


def _parse_rule(table: object, where: str) -> Rule:
    if not isinstance(table, dict):
        raise RulesError(f"{where}: expected a [[rule]] table, got {type(table).__name__}")
    if isinstance(table.get("name"), str):
        where = f"{where} ({table['name']!r})"
    for key in table:
        if key not in _RULE_FIELDS:
            raise RulesError(
                f"{where}: unknown field {key!r} (expected one of {', '.join(_RULE_FIELDS)})"
            )
    for key in _REQUIRED_FIELDS:
        if key not in table:
            raise RulesError(f"{where}: field {key!r} is missing")
    name = _text(table, "name", where)
    if not _RULE_NAME.match(name):
        raise RulesError(f"{where}: field 'name': {name!r} may hold only letters, digits, _ . -")
    dimension = _text(table, "dimension", where)
    segment = _text(table, "segment", where)
    if dimension == domain.ALL and segment not in (domain.ALL, WILDCARD):
        raise RulesError(f"{where}: field 'segment': dimension 'all' has only segment 'all'")
    if dimension == domain.TENURE and segment not in (
        *domain.TENURE_BUCKETS,
        domain.UNKNOWN,
        WILDCARD,
    ):
        raise RulesError(
            f"{where}: field 'segment': tenure segments are "
            f"{', '.join((*domain.TENURE_BUCKETS, domain.UNKNOWN))} or *"
        )
    above = _threshold(table, "above", where)
    below = _threshold(table, "below", where)
    if above is None and below is None:
        raise RulesError(f"{where}: give 'above', 'below' or both")
    if above is not None and below is not None and not below < above:
        raise RulesError(f"{where}: field 'below' ({below}) must be less than 'above' ({above})")
    min_active_users = table.get("min_active_users", 0)
    if type(min_active_users) is not int or min_active_users < 0:
        raise RulesError(
            f"{where}: field 'min_active_users': expected a whole number ≥ 0, "
            f"got {min_active_users!r}"
        )
    return Rule(name, dimension, segment, above, below, min_active_users)


def _text(table: Mapping[str, Any], key: str, where: str) -> str:
    value = table[key]
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise RulesError(f"{where}: field {key!r}: expected a non-empty string, got {value!r}")
    return value


def _threshold(table: Mapping[str, Any], key: str, where: str) -> float | None:
    if key not in table:
        return None
    value = table[key]
    # bool is an int in Python, but `above = true` is a mistake, not the threshold 1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RulesError(f"{where}: field {key!r}: expected a number (a CCI), got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise RulesError(f"{where}: field {key!r}: expected a CCI ≥ 0, got {value!r}")
    return float(value)


# --- states and records --------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    """The newest record of one alert key on cci-alerts."""

    state: State
    condition: Condition
    version: int


def alert_key(rule: str, month: str, dimension: str, segment: str) -> str:
    return f"{rule}|{month}|{dimension}|{segment}"


def transitions(
    previous: Published | None, desired: Condition | None
) -> list[tuple[State, Condition]]:
    """The (state, condition) records that take an alert from ``previous`` to ``desired``.

    Nothing while the state holds. ok → firing emits ``firing``; firing → ok emits ``cleared``
    (with the condition that cleared). A switch from one condition straight to the other emits
    ``cleared`` for the old one, then ``firing`` for the new one: every firing record is closed
    by exactly one cleared record of the same condition.
    """
    firing = previous.condition if previous is not None and previous.state == FIRING else None
    if firing == desired:
        return []
    steps: list[tuple[State, Condition]] = []
    if firing is not None:
        steps.append((CLEARED, firing))
    if desired is not None:
        steps.append((FIRING, desired))
    return steps


def alert_value(
    rule: Rule, figure: Figure, state: State, condition: Condition, version: int, at: datetime
) -> dict[str, Any]:
    return {
        "rule": rule.name,
        "month": figure.month,
        "dimension": figure.dimension,
        "segment": figure.segment,
        "state": state,
        "condition": condition,
        "threshold": rule.threshold(condition),
        "cci": figure.cci,
        "tickets": figure.tickets,
        "active_users": figure.active_users,
        "min_active_users": rule.min_active_users,
        "version": version,
        "at": rfc3339(at),
    }


@dataclass
class AlertBook:
    """The newest published state per alert key, and the records a new figure calls for."""

    rules: AlertRules
    published: dict[str, Published] = field(default_factory=dict)
    versions: Versions = field(default_factory=Versions)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """A record read from cci-alerts (this worker's or another's): the newest version wins.

        The worker reads its own records back after it has moved on; comparing versions keeps an
        old record from rolling the state back (which would repeat the newer one).
        """
        if key is None:
            return
        alert = key.decode("utf-8", "replace")
        if value is None:
            # A tombstone forgets the alert: its state is published afresh when it next applies.
            self.published.pop(alert, None)
            return
        try:
            record = orjson.loads(value)
            published = Published(record["state"], record["condition"], int(record["version"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("unreadable cci-alerts record %r ignored: %r", alert, exc)
            return
        current = self.published.get(alert)
        if current is None or published.version > current.version:
            self.published[alert] = published
        self.versions.last[alert] = max(self.versions.last.get(alert, 0), published.version)

    def forget_months_before(self, oldest_label: str) -> None:
        """Forget the alerts of months past retention: they take no more figures."""

        def expired(key: str) -> bool:
            return key.split("|", 2)[1] < oldest_label  # rule names hold no "|"

        for key in self.versions.forget(expired):
            self.published.pop(key, None)
        for key in [key for key in self.published if expired(key)]:
            del self.published[key]

    def evaluate(self, figure: Figure, now: datetime) -> list[tuple[str, dict[str, Any]]]:
        """(key, value) records to publish for this figure, in order; the book assumes them sent."""
        records: list[tuple[str, dict[str, Any]]] = []
        for rule in self.rules.matching(figure.dimension, figure.segment):
            key = alert_key(rule.name, figure.month, figure.dimension, figure.segment)
            for state, condition in transitions(self.published.get(key), rule.condition(figure)):
                version = self.versions.next(key, now)
                records.append((key, alert_value(rule, figure, state, condition, version, now)))
                self.published[key] = Published(state, condition, version)
        return records
