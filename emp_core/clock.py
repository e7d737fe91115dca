"""The platform's clock: naive UTC, the store's convention for every timestamp."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
