"""Shared fixtures of the dashboard's app-level tests: the recorded run logs, read as events."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.telemetry import read_events

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture_events(name: str) -> list:
    """The events of tests/fixtures/NAME.jsonl (the recorded logs are clean: no problems allowed)."""
    read = read_events(FIXTURES / f"{name}.jsonl", strict=True)
    return list(read.events)


@pytest.fixture(scope="session")
def steered_events() -> list:
    """A finished 26-epoch run steered by hand: pause, germinate, advance, a G2 rejection, a forced
    advance, a rejected cull, resume, then the autopilot fossilizes block1."""
    return fixture_events("steered-run")


@pytest.fixture(scope="session")
def crashed_events() -> list:
    """A run that failed at epoch 5 with a RuntimeError (the log ends with run_failed)."""
    return fixture_events("crashed-run")
