"""Replicas starting together on one empty PostgreSQL database each find or make the schema."""

from __future__ import annotations

import multiprocessing
from importlib import import_module

import pytest

from lienthong.db import make_engine

SCHEMAS = ["gateway.audit.store", "justice_adapter.models", "police_adapter.models"]


def _create(module: str, url: str, barrier) -> str:
    engine = make_engine(url)
    barrier.wait()
    try:
        import_module(module).create_schema(engine)
    except Exception as error:  # noqa: BLE001 - the outcome is what the test compares
        return type(getattr(error, "orig", None) or error).__name__
    finally:
        engine.dispose()
    return "ok"


@pytest.mark.parametrize("module", SCHEMAS)
def test_processes_starting_together_all_start(module: str, postgres_url: str) -> None:
    """Three processes create the same schema at the same moment: none fails."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(3) as pool:
        barrier = manager.Barrier(3)
        outcomes = pool.starmap(_create, [(module, postgres_url, barrier)] * 3)
    assert outcomes == ["ok", "ok", "ok"]
