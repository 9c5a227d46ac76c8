"""The one way processes talk: typed messages over Unix sockets (HTTP + JSON, aiohttp)."""

from appliance.ipc.client import IpcClient
from appliance.ipc.errors import (
    BadRequest,
    Busy,
    IpcError,
    IpcTimeout,
    NotFound,
    ServiceDown,
    TooLarge,
    Unavailable,
)
from appliance.ipc.server import IpcServer

__all__ = [
    "BadRequest",
    "Busy",
    "IpcClient",
    "IpcError",
    "IpcServer",
    "IpcTimeout",
    "NotFound",
    "ServiceDown",
    "TooLarge",
    "Unavailable",
]
