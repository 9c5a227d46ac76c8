"""The `appliance` command as a user runs it: a real process, real exit codes, real output."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import jwt
import pytest

from appliance.config import ApplianceConfig
from appliance.control.caller import Role
from appliance.control.keys import SigningKeys
from appliance.control.tokens import TokenAuthority
from appliance.ipc.peers import Peers
from tests.helpers import write_config


def appliance(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True,
                          timeout=60, env=env, check=False)


def test_config_check_ok(config_file: Path) -> None:
    result = appliance("--config", str(config_file), "config", "check")
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_config_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    bad = write_config(tmp_path / "bad.yaml", {"mqtt": {"port": "x"}})
    for args in (["--config", str(bad), "config", "check"], ["--config", str(tmp_path / "nope.yaml"), "run"]):
        result = appliance(*args)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "config error" in result.stderr


def test_config_from_environment(tmp_path: Path) -> None:
    bad = write_config(tmp_path / "env.yaml", {"api": {"nope": 1}})
    import os

    result = appliance("config", "check", env={**os.environ, "APPLIANCE_CONFIG": str(bad)})
    assert result.returncode == 2
    assert "api.nope: unknown key" in result.stderr


def test_config_show_redacts(tmp_path: Path) -> None:
    path = write_config(tmp_path / "a.yaml", {"mqtt": {"password": "hunter2"},
                                              "paths": {"state_dir": str(tmp_path)}})
    result = appliance("--config", str(path), "config", "show")
    assert result.returncode == 0
    assert "hunter2" not in result.stdout
    assert "password: '**********'" in result.stdout
    assert f"chat_model: {tmp_path}/models/chat.gguf" in result.stdout


@pytest.mark.slow
async def test_token_create_prints_a_verifiable_token_last(config_file: Path, config: ApplianceConfig,
                                                         services: Callable[..., Awaitable[Peers]]) -> None:
    await services("store")
    result = appliance("--config", str(config_file), "token", "create", "--role", "operator", "--name", "door panel")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    claims = TokenAuthority(SigningKeys.for_config(config)).verify(token)
    assert (claims.role, claims.typ, claims.sub) == (Role.OPERATOR, "app", "token:door panel")
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    listed = json.loads(appliance("--config", str(config_file), "token", "list").stdout)
    assert [(t["name"], t["jti"]) for t in listed["tokens"]] == [("door panel", claims.jti)]
    revoked = appliance("--config", str(config_file), "token", "revoke", claims.jti)
    assert json.loads(revoked.stdout)["revoked_at"] is not None


@pytest.mark.parametrize("args", [
    ["--role", "root"],
    ["--role", "admin", "--name", "x; rm -rf /"],
    ["--role", "admin", "--name", "a" * 500],
    ["--role", "admin", "--ttl", "5"],
    ["--role", "admin", "--ttl", "999999999"],
    ["--role", "admin", "--ttl", "soon"],
])
def test_token_create_rejects_bad_arguments(config_file: Path, args: list[str]) -> None:
    result = appliance("--config", str(config_file), "token", "create", *args)
    assert result.returncode == 2
    assert result.stdout == ""


def test_unknown_command_and_service(config_file: Path) -> None:
    assert appliance("--config", str(config_file), "serve", "kernel").returncode == 2
    assert appliance("--config", str(config_file), "frobnicate").returncode == 2


def test_model_demo_writes_once(tmp_path: Path) -> None:
    path = write_config(tmp_path / "a.yaml", {"paths": {"state_dir": str(tmp_path / "s")}})
    first = appliance("--config", str(path), "model", "demo")
    assert first.returncode == 0, first.stderr
    assert "noise" in first.stdout
    assert (tmp_path / "s/models/chat.gguf").read_bytes()[:4] == b"GGUF"
    again = appliance("--config", str(path), "model", "demo")
    assert "kept" in again.stdout


def test_engine_plan_explains_itself(config_file: Path, tmp_path: Path) -> None:
    from appliance.engine.probe import Gpu, Hardware

    box = Hardware(cpu_model="test box", cores=4, cpu_flags=("avx2",), mem_total_bytes=8 << 30,
                   mem_available_bytes=6 << 30, cgroup_limit_bytes=None, gpus=(Gpu(0, "RTX", 12 << 30, 11 << 30),))
    saved = tmp_path / "box.json"
    saved.write_text(json.dumps(box.as_dict()))
    result = appliance("--config", str(config_file), "engine", "plan", "--hardware", str(saved))
    assert result.returncode == 0, result.stderr
    assert "n_gpu_layers           3" in result.stdout and "why:" in result.stdout
    assert "GPU RTX: free 11,264 MiB x 0.7 - reserve 1,024 MiB" in result.stdout
    as_json = json.loads(appliance("--config", str(config_file), "engine", "plan", "--json").stdout)
    assert as_json["fits"] and as_json["n_ctx"] == 512


@pytest.mark.parametrize("content", [b"", b"GGUF\x03\x00\x00\x00garbage", b"\x00" * 64])
def test_engine_plan_of_a_broken_model_is_one_clear_line(config_file: Path, tmp_path: Path, content: bytes) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(content)
    result = appliance("--config", str(config_file), "engine", "plan", "--model", str(broken))
    assert result.returncode == 1
    assert result.stderr.startswith(f"appliance: {broken}: ") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_engine_plan_with_a_bad_hardware_file(config_file: Path, tmp_path: Path) -> None:
    saved = tmp_path / "box.json"
    saved.write_text('{"cores": "many"}')
    result = appliance("--config", str(config_file), "engine", "plan", "--hardware", str(saved))
    assert result.returncode != 0 and "--hardware" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("content", [b"", b"GGUF\x03\x00\x00\x00" + b"\xff" * 40])
def test_model_import_of_a_corrupt_file_exits_1_with_one_line(config_file: Path, tmp_path: Path,
                                                               content: bytes) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    result = appliance("--config", str(config_file), "model", "import", str(bad))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"appliance: import failed: {bad}: ")


def test_model_import_and_list(config_file: Path, tmp_path: Path, models: dict[str, Path]) -> None:
    result = appliance("--config", str(config_file), "model", "import", str(models["chat"]), "--name", "tiny")
    assert result.returncode == 0, result.stderr
    assert "imported tiny: chat (llama)" in result.stdout and "sha256" in result.stdout
    listing = json.loads(appliance("--config", str(config_file), "model", "list", "--json").stdout)
    assert [(r["name"], r["kind"]) for r in listing] == [("tiny", "chat")]
    assert len(listing[0]["sha256"]) == 64


def test_every_action_is_bound_to_its_own_handler() -> None:
    """Routing is by parser: two groups' actions of the same name never share a handler by accident."""
    import argparse

    from appliance.cli import parser

    def leaves(p: argparse.ArgumentParser, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], object]]:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return [(path, p.get_default("handler"))]
        return [leaf for name, child in subs[0].choices.items() for leaf in leaves(child, (*path, name))]

    found = leaves(parser(), ())
    assert all(handler is not None for _, handler in found), [p for p, h in found if h is None]
    by_group = {path: handler for path, handler in found}
    assert by_group[("model", "list")] is not by_group[("memory", "stats")]
    assert len(found) >= 20
