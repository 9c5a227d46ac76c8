"""The mqtt tests' own broker: a real mosquitto per test, so a persistent session is the test's alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import start_mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[int]:
    process, port = start_mosquitto(tmp_path / "broker")
    yield port
    process.terminate()
    process.wait(5)
