"""Fixtures for every tier; services are in tests/support.py (fail in CI, skip locally)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Mosquitto, mosquitto_broker, postgres_database

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private, restartable mosquitto on a free port."""
    with mosquitto_broker(tmp_path / "broker") as broker:
        yield broker


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture
def postgres_dsn() -> Iterator[str]:
    """DSN of a fresh PostgreSQL database, dropped after the test."""
    with postgres_database() as dsn:
        yield dsn
