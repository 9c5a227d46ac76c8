"""The admin page's browser tests: the whole appliance as a box runs it (the five services under
`appliance run`, a real mosquitto, HTTPS with the box's self-signed certificate) and Debian's own
chromium driven by Playwright (nothing downloaded). Nothing is mocked.

Every page a test opens is watched: a console error, an uncaught exception, a failed request or
an HTTP error answer fails the test (unless the test says it expects that status), and its last
state is kept as a screenshot under var/test-artifacts/admin-page/ (the README names the folder).
"""

from __future__ import annotations

import re
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Response, expect, sync_playwright

from tests.helpers import LIVE_S, PASSWORD, ApplianceBox, OpenPage, eventually, free_port, sign_in, write_config

ARTIFACTS = Path(__file__).resolve().parents[3] / "var" / "test-artifacts" / "admin-page"
CHROMIUM = Path("/usr/bin/chromium")
# What the probe of this machine found chromium needs headless on a closed network: no calls home.
CHROMIUM_ARGS = ["--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", "--disable-default-apps"]
USERS = {"ada": "admin", "otto": "operator", "olga": "operator", "vera": "viewer"}


def start_box(folder: Path, models: dict[str, Path], mqtt_port: int, **sections: dict[str, Any]) -> tuple[
        subprocess.Popen[bytes], ApplianceBox]:
    """`appliance run` with all five services on HTTPS; returns once the api says every one is ready."""
    port = free_port()
    config: dict[str, dict[str, Any]] = {
        "paths": {"state_dir": str(folder / "state"), "runtime_dir": str(folder / "run")},
        "engine": {"chat_model": str(models["chat"]), "embedding_encoder": "gguf",
                   "embedding_model": str(models["embedding"]), "n_ctx": 4096,
                   "n_threads": 1},
        "api": {"host": "127.0.0.1", "port": port, "tls": {"mode": "self-signed"}},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "client_id": f"appliance-{folder.name}"[:64],
                 "home_assistant": {"enabled": False}},
        "security": {"scrypt_cost": 12},
    }
    for name, keys in sections.items():
        config.setdefault(name, {}).update(keys)
    write_config(folder / "agent.yaml", dict(config))
    log = folder / "appliance.log"
    process = subprocess.Popen([sys.executable, "-m", "appliance", "--config", str(folder / "agent.yaml"), "run"],
                               stdout=log.open("ab"), stderr=subprocess.STDOUT)
    cert = folder / "state" / "tls" / "api-cert.pem"
    eventually(lambda: cert.exists() or process.poll() is not None, 60, "the api's certificate")
    box = ApplianceBox(f"https://127.0.0.1:{port}", folder / "state", mqtt_port, log,
              ssl.create_default_context(cafile=str(cert)) if cert.exists() else ssl.create_default_context())

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"appliance run exited: {log.read_text(errors='replace')[-3000:]}")
        try:
            return bool(box.rest("GET", "/api/v1/health")[1].get("status") == "ready")
        except (OSError, ValueError):
            return False

    eventually(ready, 120, "all five services to be ready", every_s=0.25)
    return process, box


def stop_box(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path], real_model: Path,
        mosquitto: int) -> Iterator[ApplianceBox]:
    """The appliance with the real default chat model (Qwen2.5-Coder-0.5B; the embedding model is
    the tiny random one, so recall here leans on words), its first admin (ada) made through
    first-boot setup, two operators (otto, olga) and a viewer (vera); an action that needs
    approval is declared, and access tokens last 60 s."""
    process, started = start_box(tmp_path_factory.mktemp("box"), {**models, "chat": real_model}, mosquitto, agent={
        "heartbeat_interval_s": 30,
        "actions": {"open_valve": {"command": ["true"], "roles": ["admin", "operator"], "approval": True}}},
        security={"access_ttl_s": 60})  # the shortest allowed: pages refresh their session during the tests
    try:
        status, pair = started.rest("POST", "/api/v1/auth/setup", {
            "setup_token": started.setup_token(), "username": "ada", "password": PASSWORD})
        assert status == 200, pair
        for user, role in USERS.items():
            if user != "ada":
                status, made = started.rest("POST", "/api/v1/users", {"username": user, "role": role,
                                                                      "password": PASSWORD}, pair["access_token"])
                assert status in (200, 201), made
        yield started
    finally:
        stop_box(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed (make test installs it)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@dataclass
class Watched:
    """What went wrong on a page: each is a test failure unless expected."""

    problems: list[str] = field(default_factory=list)
    expected_statuses: set[int] = field(default_factory=set)
    expected_console: tuple[str, ...] = ()

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not self._expected(message.text):
            self.problems.append(f"console error: {message.text}")

    def _expected(self, text: str) -> bool:
        # Chromium logs every HTTP error answer of a fetch; those a test provokes on purpose are fine.
        found = re.search(r"status of (\d{3})", text)
        if found is not None and int(found.group(1)) in self.expected_statuses:
            return True
        return any(part in text for part in self.expected_console)

    def failed(self, request: Request) -> None:
        self.problems.append(f"request failed: {request.method} {request.url}: {request.failure}")

    def response(self, response: Response) -> None:
        if response.status >= 400 and response.status not in self.expected_statuses:
            self.problems.append(f"HTTP {response.status}: {response.request.method} {response.url}")


# What a page shows may wait on the box (a task's run, a device's answer): generous, never a sleep.
expect.set_options(timeout=LIVE_S * 1000)


@pytest.fixture
def open_page(browser: Browser, box: ApplianceBox, request: pytest.FixtureRequest) -> Iterator[OpenPage]:
    """open_page("ada", locale="zh-CN") -> a signed-in page in a context of its own (None: signed out).
    ``expect`` lists HTTP statuses, ``expect_console`` console errors, the test provokes on purpose;
    ``url`` another box (fresh_box)."""
    opened: list[tuple[Page, Watched]] = []

    def open_(user: str | None = None, *, locale: str = "en-US", expect: tuple[int, ...] = (),
              expect_console: tuple[str, ...] = (), viewport: tuple[int, int] = (1280, 900),
              url: str | None = None) -> Page:
        context = browser.new_context(ignore_https_errors=True, locale=locale,
                                      viewport={"width": viewport[0], "height": viewport[1]})
        page = context.new_page()
        watched = Watched(expected_statuses=set(expect), expected_console=expect_console)
        page.on("console", watched.console)
        page.on("pageerror", lambda error: watched.problems.append(f"uncaught: {error}"))
        page.on("requestfailed", watched.failed)
        page.on("response", watched.response)
        opened.append((page, watched))
        page.goto((url or box.url) + "/")
        if user is not None:
            sign_in(page, user, PASSWORD)
        return page

    yield open_
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems = []
    for index, (page, watched) in enumerate(opened):
        name = request.node.name + (f"-{index}" if len(opened) > 1 else "")
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        problems += watched.problems
        page.context.close()
    assert not problems, "\n".join(problems)


@pytest.fixture
def fresh_box(tmp_path: Path, models: dict[str, Path], mosquitto: int) -> Iterator[ApplianceBox]:
    """An appliance that has just started for the first time: no user, a setup token in its log."""
    process, started = start_box(tmp_path, models, mosquitto)
    yield started
    stop_box(process)
