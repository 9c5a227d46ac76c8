"""The console commands' fixture: a config and a real store process behind it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import cli, eventually, serve, write_config


@pytest.fixture
def store_config(tmp_path: Path) -> Iterator[Path]:
    """A config file whose store is running (and answering the console); stopped afterwards."""
    config = write_config(tmp_path / "agent.yaml", {
        "paths": {"state_dir": str(tmp_path / "state"), "runtime_dir": str(tmp_path / "run")},
        "memory": {"vector_dim": 8}})
    store = serve(config, "store")
    try:
        eventually(lambda: cli(config, "memory", "stats").returncode == 0, 60, "the store to answer")
        yield config
    finally:
        store.terminate()
        store.wait(10)
