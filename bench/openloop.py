"""An open-loop HTTP load generator: requests leave at a constant rate, whatever the server does.

Why not wrk: wrk is closed-loop (each connection sends its next request when its last answer
arrives), so a server that stalls is simply sent less, and the requests that should have gone out
during the stall are never timed (coordinated omission). Here request i is due at start + i/rate
and its latency is counted from that due time, so a stall shows in every request it delayed.

Connections are kept alive and reused; when none is idle a new one is opened, up to
``--connections``; past that a request waits for one, and the wait counts in its latency.
Requests still unanswered ``--timeout`` seconds after they were due are errors ("timeout").

Run as a process of its own (``python -m bench.openloop URL --rate R --seconds S``) so its CPU is
its own: it prints one JSON object with the rate asked and reached, answers by status, errors by
kind, latency percentiles (ms), the generator's CPU seconds and share of one core, and its own lag
(how late it sent, p99 ms): where that lag is large the generator, not the server, was the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import Counter
from urllib.parse import urlsplit

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Pool:
    """Keep-alive connections to one host: reuse an idle one, open one while under the cap, else wait."""

    def __init__(self, host: str, port: int, cap: int) -> None:
        self.host, self.port, self.cap = host, port, cap
        self.idle: list[Connection] = []
        self.opened = 0
        self._freed: asyncio.Condition = asyncio.Condition()

    async def take(self) -> Connection:
        while True:
            if self.idle:
                return self.idle.pop()
            if self.opened < self.cap:
                self.opened += 1
                try:
                    return await asyncio.open_connection(self.host, self.port, limit=1 << 20)
                except BaseException:
                    self.opened -= 1
                    raise
            async with self._freed:
                await self._freed.wait()

    async def give(self, connection: Connection | None) -> None:
        """Back to the idle list, or (None) closed and no longer counted."""
        if connection is None:
            self.opened -= 1
        else:
            self.idle.append(connection)
        async with self._freed:
            self._freed.notify()


async def one(pool: Pool, request: bytes) -> int:
    """Send one request on a pooled connection; its status code."""
    connection: Connection | None = await pool.take()
    try:
        reader, writer = connection
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if "content-length" not in fields:
            raise ValueError(f"answer without Content-Length (status {status})")
        await reader.readexactly(int(fields["content-length"]))
        if fields.get("connection", "").lower() == "close":
            writer.close()
            connection = None
        return status
    except BaseException:
        if connection is not None:
            connection[1].close()
        connection = None
        raise
    finally:
        await pool.give(connection)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def drive(url: str, rate: float, seconds: float, headers: list[str], connections: int,
                deadline_s: float) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request = "".join([f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n",
                       *(f"{h}\r\n" for h in headers), "\r\n"]).encode()
    pool = Pool(host, port, connections)
    loop = asyncio.get_running_loop()
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    lags: list[float] = []
    pending: set[asyncio.Task[None]] = set()

    async def timed(due: float) -> None:
        try:
            status = await asyncio.wait_for(one(pool, request), deadline_s - (loop.time() - due))
        except TimeoutError:
            statuses["timeout"] += 1
            return
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            statuses[type(exc).__name__] += 1
            return
        statuses[str(status)] += 1
        latencies.append((loop.time() - due) * 1000)

    total = int(rate * seconds)
    cpu_before = os.times()
    start = loop.time() + 0.05
    for i in range(total):
        due = start + i / rate
        if (delay := due - loop.time()) > 0:
            await asyncio.sleep(delay)
        lags.append((loop.time() - due) * 1000)
        task = loop.create_task(timed(due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    sent_for = loop.time() - start
    if pending:
        await asyncio.wait(set(pending))
    cpu_after = os.times()
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    ok = sum(n for s, n in statuses.items() if s.isdigit() and 200 <= int(s) < 300)
    return {
        "rate": rate, "sent": total, "seconds": round(sent_for, 2),
        "reached": round(ok / max(sent_for, 1e-9), 1),
        "ok": ok, "statuses": dict(statuses),
        "errors": total - ok,
        "p50": percentile(latencies, 50), "p90": percentile(latencies, 90), "p99": percentile(latencies, 99),
        "max": max(latencies, default=float("nan")),
        "generator_cpu_s": round(cpu, 2), "generator_core_share": round(cpu / max(sent_for, 1e-9), 3),
        "generator_lag_p99": percentile(lags, 99), "connections": pool.opened,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    parser.add_argument("--connections", type=int, default=1000, help="at most this many open at once")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds after its due time")
    args = parser.parse_args()
    result = asyncio.run(drive(args.url, args.rate, args.seconds, args.header, args.connections, args.timeout))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
