"""Is the box online? Told by the kernel over netlink (pyroute2), not by polling.

Online means: a default route (IPv4 or IPv6, in the main table) whose interface is up. The
watcher joins the link, address and route multicast groups; any message there makes it look
again (a dump of links and routes), so a cable pulled, an address lost or a route removed are
noticed at once. When netlink cannot be used at all (a sandbox without AF_NETLINK), the box is
assumed online and the reason is kept for the health detail.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.rtnl import (
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_LINK,
)

GROUPS = RTMGRP_LINK | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
MAIN_TABLE = 254
IFF_UP = 0x1
SETTLE_S = 0.1  # a burst of netlink messages (an interface going down) is one change


async def default_route_up() -> tuple[bool, str]:
    """(online, why) from the current links and routes."""
    async with AsyncIPRoute() as ipr:
        links = {link["index"]: link async for link in await ipr.link("dump")}
        defaults = []
        for family in (socket.AF_INET, socket.AF_INET6):
            defaults += [route async for route in await ipr.route("dump", family=family)
                         if route.get("dst_len") == 0 and route.get("table") == MAIN_TABLE
                         and route.get("type", 1) == 1]
    for route in defaults:
        link = links.get(route.get("RTA_OIF"))
        if link is not None and link["flags"] & IFF_UP and link.get("IFLA_OPERSTATE") in ("UP", "UNKNOWN"):
            return True, f"default route via {link.get('IFLA_IFNAME')}"
    if defaults:
        return False, "the default route's link is down"
    return False, "no default route over an interface that is up"


class NetworkWatch:
    def __init__(self, log: logging.Logger, on_change: Callable[[bool, str], None] | None = None) -> None:
        self.log = log
        self.online = True
        self.why = "not looked yet"
        self.changed = asyncio.Event()
        self.looked = asyncio.Event()  # set once the first look is done (or netlink is known to be unusable)
        self._on_change = on_change

    async def _look(self) -> None:
        online, why = await default_route_up()
        if (online, why) != (self.online, self.why):
            if online != self.online:
                self.log.info("network %s: %s", "up" if online else "down", why, extra={"NETWORK": int(online)})
            self.online, self.why = online, why
            self.changed.set()
            if self._on_change is not None:
                self._on_change(online, why)

    async def run(self) -> None:
        try:
            await self._look()
            self.looked.set()
            async with AsyncIPRoute() as events:
                await events.bind(groups=GROUPS)
                while True:
                    async for _ in events.get():  # one batch of messages, whatever they say
                        pass
                    await asyncio.sleep(SETTLE_S)
                    await self._look()
        except (OSError, PermissionError) as exc:
            self.online, self.why = True, f"netlink unavailable ({exc}); assumed online"
            self.log.warning("cannot watch the network: %s", exc)
            self.looked.set()
