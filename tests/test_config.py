"""The configuration model: defaults, the reference design's file, and every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import MAX_CONFIG_BYTES, ApplianceConfig, ConfigError, load_config, parse_config

REFERENCE = """
memory:
  vector_dim: 768
  index_type: HNSW
  storage_path: /data/memory
resource:
  max_concurrency: 4
  gpu_enabled: true
  gpu_fraction: 0.7
security:
  auth_required: true
  jwt_secret: "a-long-enough-secret-for-hs256-signing!"
"""


def test_defaults_are_complete() -> None:
    config = parse_config("")
    assert config.memory.vector_dim == 512  # the default encoder's (use-multilingual-v3)
    assert config.api.port == 8080
    assert config.mqtt.topics == ["devices/+/events", "devices/+/state"]
    assert config.security.auth_required is True


def test_reference_design_keys_are_accepted() -> None:
    config = parse_config(REFERENCE)
    assert config.memory.vector_dim == 768
    assert config.memory.index_type == "hnsw"
    assert config.memory_dir == Path("/data/memory")
    assert config.resource.gpu_fraction == 0.7


def test_shipped_config_file_is_valid() -> None:
    assert isinstance(load_config(Path(__file__).parents[1] / "config/agent.yaml"), ApplianceConfig)


@pytest.mark.parametrize(("text", "expected"), [
    ("memory:\n  vector_dims: 5\n", "memory.vector_dims: unknown key"),
    ("colour: red\n", "colour: unknown key"),
    ("api:\n  port: eighty\n", "api.port: Input should be a valid integer"),
    ("api:\n  port: 70000\n", "api.port: Input should be less than or equal to 65535"),
    ("resource:\n  gpu_fraction: 1.5\n", "resource.gpu_fraction"),
    ("mqtt:\n  topics: ['devices/#/x']\n", "mqtt.topics"),
    ("mqtt:\n  topics: ['a+/b']\n", "'+' must be a whole level"),
    ("mqtt:\n  topics: []\n", "mqtt.topics"),
    ("mqtt:\n  qos: 3\n", "mqtt.qos"),
    ("security:\n  jwt_secret: your-secure-key\n", "security.jwt_secret: Value error, must be at least 32 bytes"),
    ("api:\n  tls:\n    cert_file: /x.pem\n", "api.tls: Value error, cert_file and key_file must be set together"),
    ("memory:\n  index_type: ivf\n", "memory.index_type"),
    ("memory:\n  chunk_chars: 200\n  chunk_overlap: 200\n", "memory: Value error, chunk_overlap (200) must be below"),
    ("memory:\n  ring_size: 0\n", "memory.ring_size"),
    ("memory:\n  candidates: -1\n", "memory.candidates"),
    ("memory:\n  candidate_fraction: 2\n", "memory.candidate_fraction"),
    ("memory:\n  weight_text: .nan\n", "memory.weight_text"),
    ("memory:\n  archive_after_days: -3\n", "memory.archive_after_days"),
    ("memory:\n  key_file: [1]\n", "memory.key_file"),
    ("agent:\n  backfill_interval_s: 0\n", "agent.backfill_interval_s"),
    ("- just\n- a list\n", "(top level): expected a mapping"),
    ("api: [1, 2]\n", "api: Input should be a valid dictionary"),
    ("api:\n  port: 1\napi:\n  port: 2\n", "duplicate key 'api'"),
    ("api: {port: 8080\n", "YAML syntax error"),
    ("engine: !!python/object:os.system {}\n", "YAML syntax error"),
])
def test_bad_values_name_the_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "agent.yaml")
    message = str(caught.value)
    assert expected in message
    assert message.startswith("agent.yaml")
    assert "\n" not in message


def test_secrets_are_redacted() -> None:
    config = parse_config(REFERENCE + "mqtt:\n  password: hunter2\n")
    shown = str(config.redacted())
    assert "hunter2" not in shown
    assert "a-long-enough-secret" not in shown
    assert "**********" in shown


def test_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than"):
        load_config(big)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"api:\n  host: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)


def test_systemd_directories_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/appliance")
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/appliance")
    config = parse_config("")
    assert config.paths.state_dir == Path("/var/lib/appliance")
    assert config.socket_path("store") == Path("/run/appliance/store.sock")
