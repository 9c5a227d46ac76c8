"""HTTPS for the control plane: the self-signed certificate, the TLS versions, HSTS, and when plain HTTP is allowed."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession, TCPConnector, web
from cryptography import x509

from appliance.api.app import build_app
from appliance.api.tls import tls_for
from appliance.config import ApplianceConfig, ConfigError, parse_config
from appliance.control.dispatcher import Dispatcher
from appliance.control.table import default_table
from appliance.ipc.peers import Peers
from tests.helpers import free_port


def with_api(config: ApplianceConfig, **api: object) -> ApplianceConfig:
    return config.model_copy(update={"api": config.api.model_copy(update=api)})


def test_when_tls_is_on(config: ApplianceConfig) -> None:
    assert tls_for(config).context is None  # the test config listens on 127.0.0.1: plain HTTP
    lan = with_api(config, host="0.0.0.0")
    assert tls_for(lan).context is not None
    off = with_api(lan, tls=lan.api.tls.model_copy(update={"mode": "off"}))
    setup = tls_for(off)
    assert setup.context is None and "ON THE NETWORK" in setup.detail


def test_self_signed_certificate_names_the_box_and_is_kept(config: ApplianceConfig) -> None:
    lan = with_api(config, host="0.0.0.0")
    first = tls_for(lan)
    assert "made a self-signed certificate" in first.detail
    cert_file = Path(config.paths.state_dir) / "tls" / "api-cert.pem"
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(a) for a in names.get_values_for_type(x509.IPAddress)}
    assert (Path(config.paths.state_dir) / "tls" / "api-key.pem").stat().st_mode & 0o777 == 0o600
    again = tls_for(lan)
    assert "made" not in again.detail and first.detail.split("SHA-256 ")[1] == again.detail.split("SHA-256 ")[1]


@pytest.fixture
async def https(config: ApplianceConfig) -> AsyncIterator[tuple[int, Path]]:
    tls_config = with_api(config, tls=config.api.tls.model_copy(update={"mode": "self-signed"}))
    setup = tls_for(tls_config)
    assert setup.context is not None
    peers = Peers(config, timeout_s=1.0)
    app = build_app(Dispatcher(default_table(), peers, config, logging.getLogger("test")), config.api, tls=True)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=setup.context).start()
    yield port, Path(config.paths.state_dir) / "tls" / "api-cert.pem"
    await runner.cleanup()
    await peers.close()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
async def test_https_prefers_tls13_refuses_old_versions_and_sends_hsts(https: tuple[int, Path]) -> None:
    port, cert = https
    client_context = ssl.create_default_context(cafile=str(cert))  # verifies the certificate and its SANs
    async with (ClientSession(connector=TCPConnector(ssl=client_context)) as session,
                session.get(f"https://127.0.0.1:{port}/api/v1/health") as reply):
        assert reply.status == 200
        assert reply.headers["Strict-Transport-Security"].startswith("max-age=")
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context)
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.3"
    writer.close()
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
        try:
            old.minimum_version = old.maximum_version = version
            old.set_ciphers("ALL:@SECLEVEL=0")
        except (ValueError, ssl.SSLError):
            continue  # this OpenSSL cannot even offer it: refused all the more
        with pytest.raises((ssl.SSLError, OSError, ConnectionError)):
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=old)
            writer.close()


def test_turning_auth_off_is_refused_off_loopback() -> None:
    with pytest.raises(ConfigError, match=r"security\.auth_required: false is only allowed when api\.host is loopback"):
        parse_config("security: {auth_required: false}\napi: {host: 0.0.0.0}")
    assert not parse_config("security: {auth_required: false}\napi: {host: 127.0.0.1}").security.auth_required
