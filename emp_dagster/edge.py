"""What every domain does at the Dagster edge, in one place: check results from domain outcomes, run
config classes from domain settings, partition-range run tags. Public Dagster API only."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

import dagster as dg
import pydantic

from emp_core.market_data.quality import CheckOutcome

# The run tags that make one run cover a range of partitions (a single-run backfill). Dagster reads them
# by these names; it exports no public constant for them, so they are spelled here once.
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    """Tags for one run over the partitions ``first`` .. ``last`` (both included)."""
    return {PARTITION_RANGE_START_TAG: first, PARTITION_RANGE_END_TAG: last}


def metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    """Domain metadata as Dagster metadata: dicts and lists as JSON, the rest as they are."""
    return {k: dg.MetadataValue.json(v) if isinstance(v, dict | list) else v for k, v in values.items()}


def check_result(
    outcome: CheckOutcome,
    *,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
    asset_key: dg.AssetKey | None = None,
    seconds: float | None = None,
) -> dg.AssetCheckResult:
    """The asset check result of a domain check's outcome (name, verdict, description, figures), with the
    seconds the check took when it was timed on its own (a check computed inside an asset is timed there)."""
    values = outcome.metadata if seconds is None else {**outcome.metadata, "seconds": round(seconds, 3)}
    return dg.AssetCheckResult(check_name=outcome.name, passed=outcome.passed, description=outcome.description,
                               metadata=metadata(values), severity=severity, asset_key=asset_key)


def config_from(settings: type, name: str, doc: str, only: tuple[str, ...] | None = None,
                **extra: tuple[type, Any]) -> type[dg.Config]:
    """A Dagster run-config class with the fields, types and defaults of the frozen dataclass ``settings``
    (those named in ``only``, if given; plus ``extra`` fields as ``name=(type, default)``), so the two cannot
    drift apart."""
    hints = typing.get_type_hints(settings)
    names = {f.name for f in dataclasses.fields(settings)}
    if only is not None and not set(only) <= names:
        raise ValueError(f"{settings.__name__} has no field(s) {', '.join(sorted(set(only) - names))}")
    fields = {f.name: (hints[f.name], _default(f)) for f in dataclasses.fields(settings)
              if only is None or f.name in only}
    config = pydantic.create_model(name, __base__=dg.Config, **extra, **fields)
    config.__doc__ = doc
    return config


def _default(f: dataclasses.Field) -> Any:
    """The pydantic default of a dataclass field: its value, its factory, or required."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return pydantic.Field(default_factory=f.default_factory)
    return ...


def settings_of(config: dg.Config, settings: type) -> Any:
    """The domain settings held by a config class made by :func:`config_from` (a field it leaves out keeps
    its default)."""
    values = config.model_dump()
    return settings(**{f.name: values[f.name] for f in dataclasses.fields(settings) if f.name in values})


def store_metadata(store) -> dict[str, Any]:
    """What a materialisation should say about the store it used: the tier's store, the hot cache's counts
    (hits, misses, evictions, bypasses) when there is one, and the failover decision when it was taken."""
    out: dict[str, Any] = {"store": store.location}
    cache = getattr(store, "cache", None)
    if cache is not None:
        out["cache"] = dg.MetadataValue.json(cache.stats())
    reason = getattr(store, "reason", None)
    if reason:
        out["failover"] = reason
    return out
