"""The dashboard page's way of applying a live stream's ``cci-changes`` event, for tests."""

from __future__ import annotations


def apply_changes(data: object, changes: object) -> object:
    """What dashboard.js applyChanges does."""
    assert isinstance(changes, list)
    for path, value in changes:
        if not path:
            data = value
            continue
        parent = data
        for key in path[:-1]:
            parent = parent[key]  # type: ignore[index]
        parent[path[-1]] = value  # type: ignore[index]
    return data
