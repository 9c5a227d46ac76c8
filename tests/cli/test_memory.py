"""`appliance memory ...` against a real store process; bad files and arguments exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cli, serve, write_config

pytestmark = pytest.mark.slow


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "agent.yaml", {
        "paths": {"state_dir": str(tmp_path / "state"), "runtime_dir": str(tmp_path / "run")},
        "memory": {"vector_dim": 8, "chunk_chars": 200, "chunk_overlap": 40},
    })


def test_memory_commands_end_to_end(config: Path, tmp_path: Path) -> None:
    store = serve(config, "store")
    try:
        for _ in range(100):
            if cli(config, "memory", "stats").returncode == 0:
                break
        manual = tmp_path / "manual.md"
        manual.write_text("# Pump P-3\n\n" + "Open valve V-7 before starting the pump. " * 500)
        ingested = cli(config, "memory", "ingest", str(manual), "--tag", "manuals")
        assert ingested.returncode == 0, ingested.stderr
        chunks = json.loads(ingested.stdout)["chunks"]
        assert chunks > 64  # more than one batch
        assert json.loads(cli(config, "memory", "stats").stdout)["memories"] == chunks
        assert "no embeddings" in ingested.stderr  # no engine running: stored for text search
        manual.write_text("# Pump P-3\n\nOpen valve V-7 first. Then start the pump.")
        again = json.loads(cli(config, "memory", "ingest", str(manual)).stdout)
        assert (again["chunks"], again["replaced"]) == (1, chunks)
        found = cli(config, "memory", "recall", "valve V-7", "--mode", "text", "--kind", "document")
        assert found.returncode == 0, found.stderr
        assert "valve V-7" in json.loads(found.stdout)["hits"][0]["record"]["text"]
        remembered = cli(config, "memory", "remember", "old note", "--source", "tester")
        assert remembered.returncode == 0, remembered.stderr
        archived = cli(config, "memory", "archive", "--older-than-days", "0")
        assert archived.returncode == 0, archived.stderr
        assert "archived" in archived.stdout and "segments" in archived.stdout
        listed = json.loads(cli(config, "memory", "find-archived", "--source", "tester").stdout)
        assert [r["text"] for r in listed["records"]] == ["old note"]
        backup = tmp_path / "backup.db"
        assert cli(config, "memory", "backup", str(backup)).returncode == 0
        refused = cli(config, "memory", "restore", str(backup))
        assert refused.returncode == 1 and "stop it first" in refused.stderr
    finally:
        store.terminate()
        store.wait(10)
    restored = cli(config, "memory", "restore", str(backup))
    assert restored.returncode == 0, restored.stderr
    assert cli(config, "audit", "verify").returncode == 0


@pytest.mark.parametrize(("args", "message"), [
    (["memory", "ingest", "/no/such/file.md"], "cannot read /no/such/file.md"),
    (["memory", "recall", "x", "--since", "yesterday-ish"], "neither unix seconds nor an ISO 8601 time"),
    (["memory", "recall", "x", "-k", "0"], "k"),
    (["memory", "remember", "x", "--tag", "has space"], "tag"),
    (["memory", "restore", "/no/such/backup.db"], "no such file"),
])
def test_bad_arguments_exit_2(config: Path, args: list[str], message: str) -> None:
    result = cli(config, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_binary_document_is_refused(config: Path, tmp_path: Path) -> None:
    blob = tmp_path / "image.md"
    blob.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    result = cli(config, "memory", "ingest", str(blob))
    assert result.returncode == 2 and "not UTF-8 text (invalid byte at offset 0)" in result.stderr


def test_store_down_is_a_clear_failure(config: Path) -> None:
    result = cli(config, "memory", "stats")
    assert result.returncode == 1 and "store" in result.stderr
