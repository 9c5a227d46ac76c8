"""make bench-admin: the admin page's weight, time to interactive and CPU in the browser, in one run.

The five real services under `appliance run` (tiny models: nothing here depends on the model), a
real mosquitto, HTTPS with the box's self-signed certificate on loopback, and Debian's chromium
driven by Playwright:

1. weight: every byte the browser receives to show the login page and then the dashboard, each
   asset uncompressed (the api serves them as they are), with a cold cache (goal <= 300 KB);
2. time to interactive, cold cache, median of --runs: navigation to the login form ready for
   typing, and sign-in to the dashboard showing every service (its first WebSocket event);
3. CPU with the charts running: the dashboard open for --seconds while a device publishes 20
   events a second, next to the same tab on about:blank for as long: the page's main-thread busy
   time (CDP Performance.getMetrics TaskDuration) and all of chromium's processes (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from playwright.sync_api import Page, sync_playwright

sys.path.insert(0, str(Path(__file__).parent))
from engine import CACHE, free_port, machine

from appliance.modelfiles.tinymodel import CHAT_SHAPE, embedding_shape, write_tiny_llama

HERE = Path(__file__).parent
CHROMIUM_ARGS = ["--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic"]
PASSWORD = "correct horse battery staple"  # noqa: S105 - the bench box's own admin, made here


def start(work: Path) -> tuple[list[subprocess.Popen[bytes]], str, int, ssl.SSLContext]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    broker_port, port = free_port(), free_port()
    (work / "mosquitto.conf").write_text(f"listener {broker_port} 127.0.0.1\nallow_anonymous true\n"
                                         + ("user root\n" if os.geteuid() == 0 else ""))
    broker = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(work / "mosquitto.conf")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = {
        "paths": {"state_dir": str(work / "state"), "runtime_dir": str(work / "run")},
        "engine": {"chat_model": str(write_tiny_llama(CACHE / "bench-admin-chat.gguf", CHAT_SHAPE)),
                   "embedding_encoder": "gguf",
                   "embedding_model": str(write_tiny_llama(CACHE / "bench-embedding.gguf", embedding_shape(384)))},
        "api": {"host": "127.0.0.1", "port": port, "tls": {"mode": "self-signed"}},
        "mqtt": {"port": broker_port, "home_assistant": {"enabled": False}},
        "logging": {"level": "warning"},
    }
    (work / "agent.yaml").write_text(yaml.safe_dump(config))
    log = work / "appliance.log"
    box = subprocess.Popen([sys.executable, "-m", "appliance", "--config", str(work / "agent.yaml"), "run"],
                           stdout=log.open("ab"), stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while not (token := re.findall(r"one-time setup token ([A-Za-z0-9_-]+)", log.read_text(errors="replace"))):
        if time.monotonic() > deadline or box.poll() is not None:
            raise RuntimeError(f"the appliance did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)
    tls = ssl.create_default_context(cafile=str(work / "state" / "tls" / "api-cert.pem"))
    request = urllib.request.Request(url + "/api/v1/auth/setup", method="POST", headers={  # noqa: S310 - https
        "Content-Type": "application/json"}, data=json.dumps({"setup_token": token[-1], "username": "ada",
                                                              "password": PASSWORD}).encode())
    urllib.request.urlopen(request, context=tls, timeout=30).close()  # noqa: S310 - the https URL above
    return [box, broker], url, broker_port, tls


def chromium_cpu_s() -> float:
    """CPU seconds of every chromium process now (the browser, its renderers, GPU and utility)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str((entry / "exe").readlink()).startswith("/usr/lib/chromium/"):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            continue
    return total


def sign_in(page: Page) -> float:
    """Seconds from pressing sign-in to the dashboard showing all five services."""
    page.locator("#login-form input[name=username]").fill("ada")
    page.locator("#login-form input[name=password]").fill(PASSWORD)
    started = time.perf_counter()
    page.locator("#login-form button[type=submit]").click()
    page.locator("#services tbody tr").nth(4).wait_for()
    return time.perf_counter() - started


def cold_loads(browser: Any, url: str, runs: int) -> tuple[dict[str, int], list[float], list[float]]:
    weights: dict[str, int] = {}
    to_form, to_dashboard = [], []
    for run in range(runs):
        context = browser.new_context(ignore_https_errors=True)
        page = context.new_page()
        if run == 0:
            page.on("response", lambda r: weights.__setitem__(r.url.removeprefix(url), len(r.body()))
                    if r.request.resource_type != "websocket" and "/api/" not in r.url and r.status < 300 else None)
        started = time.perf_counter()
        page.goto(url + "/", wait_until="commit")
        page.locator("#login-form input[name=username]:focus").wait_for()
        to_form.append(time.perf_counter() - started)
        to_dashboard.append(sign_in(page))
        page.wait_for_load_state("networkidle")
        context.close()
    return weights, to_form, to_dashboard


def cpu_window(page: Page, seconds: float) -> tuple[float, float]:
    """(main-thread busy seconds of the page, chromium's CPU seconds) over ``seconds``."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")

    def busy() -> float:
        return next(m["value"] for m in cdp.send("Performance.getMetrics")["metrics"] if m["name"] == "TaskDuration")

    busy_before, cpu_before = busy(), chromium_cpu_s()
    time.sleep(seconds)
    return busy() - busy_before, chromium_cpu_s() - cpu_before


def publish_events(port: int, stop: threading.Event) -> None:
    """A device publishing 20 events a second (the events/s chart has something to draw)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-admin-meter")
    client.connect("127.0.0.1", port)
    client.loop_start()
    n = 0
    while not stop.wait(0.05):
        n += 1
        client.publish(f"devices/meter-{n % 5}/events", json.dumps({"id": f"m{n}", "kwh": n}), qos=1)
    client.disconnect()
    client.loop_stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    processes, url, broker_port, _ = start(CACHE / "admin-run")
    stop = threading.Event()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            weights, to_form, to_dashboard = cold_loads(browser, url, args.runs)
            page = browser.new_context(ignore_https_errors=True).new_page()
            page.goto(url + "/")
            sign_in(page)
            publisher = threading.Thread(target=publish_events, args=(broker_port, stop), daemon=True)
            publisher.start()
            page.locator("#chart-events").filter(has_not_text="—").wait_for(timeout=30_000)
            dashboard_busy, dashboard_cpu = cpu_window(page, args.seconds)
            page.goto("about:blank")
            blank_busy, blank_cpu = cpu_window(page, args.seconds)
            browser.close()
    finally:
        stop.set()
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(60)
    total = sum(weights.values())
    rows = [f"| `{path}` | {size:,} |" for path, size in sorted(weights.items(), key=lambda item: -item[1])]
    median = statistics.median
    table = "\n".join([
        "# Admin page benchmark: weight, time to interactive, CPU in the browser\n",
        f"Machine: {machine()}; Debian chromium, headless, driven by Playwright",
        f"Command: make bench-admin ({args.runs} cold loads; {args.seconds:g} s windows)\n",
        f"**Weight of a first load** (login page, then the dashboard; uncompressed; goal <= 300 KB): "
        f"**{total:,} bytes ({total / 1024:.1f} KiB) in {len(weights)} files**\n",
        "| file | bytes |", "|---|---|", *rows, "",
        "| time to interactive, cold cache, loopback HTTPS | median | min | max |", "|---|---|---|---|",
        f"| navigation to the login form ready for typing | {1000 * median(to_form):.0f} ms | "
        f"{1000 * min(to_form):.0f} ms | {1000 * max(to_form):.0f} ms |",
        f"| sign-in to the dashboard showing all five services | {1000 * median(to_dashboard):.0f} ms | "
        f"{1000 * min(to_dashboard):.0f} ms | {1000 * max(to_dashboard):.0f} ms |", "",
        f"| CPU over {args.seconds:g} s | page main thread busy | all chromium processes |", "|---|---|---|",
        f"| dashboard, charts running (20 device events/s, metrics every second, status every 2 s) | "
        f"{dashboard_busy:.2f} s ({100 * dashboard_busy / args.seconds:.1f} %) | "
        f"{dashboard_cpu:.2f} s ({100 * dashboard_cpu / args.seconds:.1f} % of a core) |",
        f"| the same tab on about:blank | {blank_busy:.2f} s ({100 * blank_busy / args.seconds:.1f} %) | "
        f"{blank_cpu:.2f} s ({100 * blank_cpu / args.seconds:.1f} % of a core) |",
        f"| dashboard minus blank | {dashboard_busy - blank_busy:.2f} s | {dashboard_cpu - blank_cpu:.2f} s "
        f"({100 * (dashboard_cpu - blank_cpu) / args.seconds:.1f} % of a core) |",
    ]) + "\n"
    sys.stdout.write(table)
    (HERE / "results" / "admin-vm.md").write_text(table)


if __name__ == "__main__":
    main()
