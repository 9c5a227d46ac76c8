"""An endpoint names its service as a type: calling it on another service's client fails mypy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SNIPPET = '''
from appliance.ipc.client import IpcClient
from appliance.protocol.common import HEALTH, Engine, Store
from appliance.protocol.engine import ENGINE_METRICS
from appliance.protocol.store import STORE_STATS


async def calls(store: IpcClient[Store], engine: IpcClient[Engine]) -> None:
    await store.call(STORE_STATS)
    await store.call(HEALTH)
    await engine.call(HEALTH)
    await engine.call(ENGINE_METRICS)
    await engine.call(STORE_STATS)  # the one wrong call
'''


def test_a_store_endpoint_sent_to_the_engine_is_a_type_error(tmp_path: Path) -> None:
    source = tmp_path / "calls.py"
    source.write_text(SNIPPET)
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
                             "--cache-dir", str(ROOT / ".mypy_cache"), str(source)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, result.stdout
    assert "calls.py:13:" in errors[0] and "Literal['store']" in errors[0] and "Literal['engine']" in errors[0]
