"""Fixtures for every tier; services are in tests/support.py (fail in CI, skip locally)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from taktline_cloud.storage import Database
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


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of each backend (a module may define its own instead)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cloud.db'}"
    return str(request.getfixturevalue("postgres_dsn"))


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """The cloud's database on `database_url`, migrated, closed afterwards."""
    with Database(database_url) as database:
        yield database
