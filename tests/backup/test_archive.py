"""`appliance backup` / `restore` with a real store process and real files: a round trip that brings
back memories, keys and config, and hostile or damaged backups refused before anything is written."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.ipc.peers import Peers
from appliance.protocol.store import STORE_RECALL, STORE_REMEMBER, MemoryIn, RecallRequest
from tests.helpers import cli, serve, wait_ready

pytestmark = pytest.mark.slow


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def made(config_file: Path, tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A backup of a box with one memory (the store running while it is made), and the state as it was."""
    store = serve(config_file, "store", log=tmp_path / "store.log")
    peers = Peers(load_config(config_file))

    async def remember() -> None:
        await wait_ready(peers.store)
        await peers.store.call(STORE_REMEMBER, MemoryIn(text="pump P-3 was serviced on Monday"))
        await peers.close()

    try:
        asyncio.run(remember())
        out = tmp_path / "box.tar.gz"
        done = cli(config_file, "backup", str(out))
        assert done.returncode == 0, done.stderr
        assert "holds this box's private keys" in done.stdout and out.stat().st_mode & 0o777 == 0o600
        refused = cli(config_file, "restore", str(out))
        assert refused.returncode == 1 and "stop the appliance first" in refused.stderr
        assert "store running" in refused.stderr
    finally:
        store.terminate()
        store.wait(15)
    state = load_config(config_file).paths.state_dir
    return out, tree(state / "keys")


def test_a_restore_brings_back_memories_keys_and_config(config_file: Path, tmp_path: Path,
                                                      made: tuple[Path, dict[str, bytes]]) -> None:
    backup, keys_before = made
    config = load_config(config_file)
    original_config = config_file.read_bytes()
    for key in (config.paths.state_dir / "keys").rglob("*"):
        if key.is_file():
            key.write_bytes(b"lost")
    (config.memory_dir / "memory.db").unlink()
    config_file.write_text(original_config.decode() + "\n# edited after the backup\n")
    done = cli(config_file, "restore", str(backup))
    assert done.returncode == 0, done.stderr
    assert "start the appliance again" in done.stdout
    assert config_file.read_bytes() == original_config
    assert tree(config.paths.state_dir / "keys") == keys_before
    store = serve(config_file, "store", log=tmp_path / "store.log")

    async def recall() -> list[str]:
        peers = Peers(config)
        try:
            await wait_ready(peers.store)
            reply = await peers.store.call(STORE_RECALL, RecallRequest(query="pump serviced", mode="text", k=5))
            return [hit.record.text for hit in reply.hits]
        finally:
            await peers.close()

    try:
        assert asyncio.run(recall()) == ["pump P-3 was serviced on Monday"]
    finally:
        store.terminate()
        store.wait(15)


def repack(backup: Path, out: Path, change: Callable[[list[tuple[tarfile.TarInfo, bytes]]], None]) -> Path:
    with tarfile.open(backup, "r:gz") as tar:
        members = [(info, tar.extractfile(info).read()) for info in tar]  # type: ignore[union-attr]
    change(members)
    with tarfile.open(out, "w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return out


def _add(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = ""
         ) -> Callable[[list[tuple[tarfile.TarInfo, bytes]]], None]:
    def change(members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        members.append((info, data))
    return change


def _edit(name: str, edit: Callable[[bytes], bytes]) -> Callable[[list[tuple[tarfile.TarInfo, bytes]]], None]:
    def change(members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
        for i, (info, data) in enumerate(members):
            if info.name == name:
                members[i] = (info, edit(data))
    return change


def _manifest(edit: Callable[[dict[str, object]], None]) -> Callable[[list[tuple[tarfile.TarInfo, bytes]]], None]:
    def rewrite(data: bytes) -> bytes:
        manifest = json.loads(data)
        edit(manifest)
        return json.dumps(manifest).encode()
    return _edit("manifest.json", rewrite)


def _flip_byte(data: bytes) -> bytes:
    return data[:100] + bytes([data[100] ^ 1]) + data[101:]


HOSTILE: dict[str, tuple[Callable[[list[tuple[tarfile.TarInfo, bytes]]], None], str]] = {
    "a path out of the state folder": (_add("../../etc/cron.d/evil"), "not a name a backup holds"),
    "an absolute path": (_add("/etc/passwd"), "not a name a backup holds"),
    "a key that is a symlink": (_add("keys/jwt/extra", kind=tarfile.SYMTYPE, link="/etc/shadow"),
                                "not a regular file"),
    "a member the manifest does not list": (_add("keys/jwt/extra"), "not listed ['keys/jwt/extra']"),
    "an altered key": (_edit("keys/memory.key", lambda d: d[:-1] + bytes([d[-1] ^ 1])), "does not match its sha256"),
    "an altered memory file": (_edit("memory/memory.db", _flip_byte), "does not match its sha256"),
    "a listed member missing": (lambda m: m.__delitem__(-1), "listed but missing"),
    "a manifest of another format": (_manifest(lambda m: m.update(format=99)), "format 99; this release reads"),
    "a manifest that is not JSON": (_edit("manifest.json", lambda d: b"{not json"), "is not a backup manifest"),
    "a size that disagrees": (_manifest(lambda m: m["files"]["config/agent.yaml"].update(size=1)),  # type: ignore[index]
                              "the manifest says 1"),
    "no manifest": (lambda m: m.__delitem__(0), "no manifest.json"),
}


def test_a_hostile_or_damaged_backup_is_refused_before_anything_is_written(
        config_file: Path, tmp_path: Path, made: tuple[Path, dict[str, bytes]]) -> None:
    state = load_config(config_file).paths.state_dir
    before, config_before = tree(state), config_file.read_bytes()
    for case, (change, reason) in HOSTILE.items():
        bad = repack(made[0], tmp_path / "bad.tar.gz", change)
        done = cli(config_file, "restore", str(bad))
        assert done.returncode == 2, (case, done.stdout, done.stderr)
        assert "restore refused, nothing was changed" in done.stderr and reason in done.stderr, (case, done.stderr)
        assert tree(state) == before and config_file.read_bytes() == config_before, case
    assert not (tmp_path.parent / "etc").exists()


def test_a_truncated_or_foreign_file_is_refused(config_file: Path, tmp_path: Path,
                                                made: tuple[Path, dict[str, bytes]]) -> None:
    whole = made[0].read_bytes()
    for damaged in (whole[: len(whole) // 2], b"\x00" * 4096, b""):
        bad = tmp_path / "bad.tar.gz"
        bad.write_bytes(damaged)
        done = cli(config_file, "restore", str(bad))
        assert done.returncode == 2 and "not a whole backup" in done.stderr, done.stderr


def test_a_memory_file_that_is_not_sqlite_is_refused(config_file: Path, tmp_path: Path,
                                                     made: tuple[Path, dict[str, bytes]]) -> None:
    import hashlib

    junk = b"not a database" * 100

    def swap(members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
        _edit("memory/memory.db", lambda _: junk)(members)
        _manifest(lambda m: m["files"]["memory/memory.db"].update(  # type: ignore[index]
            size=len(junk), sha256=hashlib.sha256(junk).hexdigest()))(members)

    bad = repack(made[0], tmp_path / "bad.tar.gz", swap)
    done = cli(config_file, "restore", str(bad))
    assert done.returncode == 2 and "memory/memory.db" in done.stderr and "SQLite" in done.stderr, done.stderr
