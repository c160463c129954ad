"""What the store raises: ClickHouse refused or could not run something."""

from __future__ import annotations


class StoreError(Exception):
    """ClickHouse refused or could not run something; the message is ClickHouse's own."""


class QueryRefused(StoreError):
    """The statement may not run (not one read-only statement, or against the query policy)."""


class StoreBusy(StoreError):
    """Every slot of the query's budget (ad hoc or forecast) is taken."""
