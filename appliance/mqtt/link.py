"""One MQTT connection seen from asyncio: paho-mqtt's protocol engine driven by the event loop.

Why paho directly (pinned in pyproject): aiomqtt 2.5 acknowledges each message inside paho
before the application has it, and aiomqtt 3 (manual acks only) is an alpha. paho-mqtt 2.x has
manual acknowledgement (`manual_ack=True`, `ack(mid, qos)`): a message is acknowledged only when
`ack` is called, which the bridge does once the store has committed the event (docs/mqtt.md).

paho runs without a thread of its own: the event loop calls its `loop_read` when the socket is
readable, `loop_write` when it has something to send, and `loop_misc` every second (keepalive).
Its socket is buffered in user space (mqtt/wire.py). Every paho callback therefore runs on the
event loop's thread, except during `connect`, which paho does in a worker thread (DNS, TCP, TLS).

MQTT 5, a pinned client id, clean start off and a session expiry: the broker keeps our
subscriptions and queues QoS 1 messages while we are away, and redelivers whatever we had not
acknowledged. Receive Maximum bounds how many unacknowledged messages the broker sends us, so
the inbox here is bounded too. One `MqttLink` is one connection: when it drops, `lost` is set
and the owner makes a new link (with its own backoff); paho's own reconnect is off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from appliance.config import TlsClientConfig
from appliance.mqtt.wire import BufferedSocket

MISC_EVERY_S = 1.0
READ_SLICE = 200  # packets read before the loop may run anything else


class LinkDown(Exception):
    """The broker cannot be reached, refused us, or the connection dropped; the message says which."""


@dataclass(frozen=True)
class Incoming:
    topic_bytes: bytes  # as received: it may not even be UTF-8
    payload: bytes
    qos: int
    mid: int
    retain: bool
    response_topic: str | None = None
    correlation: bytes | None = None
    link: MqttLink | None = field(default=None, compare=False, repr=False)

    @property
    def topic(self) -> str:
        return self.topic_bytes.decode("utf-8", "backslashreplace")

    def ack(self) -> None:
        """Acknowledge it to the broker (QoS 1), on the connection it came by, if that still stands."""
        if self.link is not None and self.qos > 0:
            self.link.ack(self.mid, self.qos, len(self.payload))


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    client_id: str
    keepalive_s: int = 60
    username: str | None = None
    password: str | None = None
    tls: TlsClientConfig = field(default_factory=TlsClientConfig)
    session_expiry_s: int = 0  # 0: the session ends with the connection
    receive_maximum: int = 1000
    receive_max_bytes: int = 64 << 20  # payload bytes held unacknowledged at most (see MqttLink._held)
    will: tuple[str, bytes, bool] | None = None  # topic, payload, retain
    manual_ack: bool = True


class MqttLink:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lost = asyncio.Event()
        self.reason = ""
        self.session_present = False
        self._loop = asyncio.get_running_loop()
        self._connected: asyncio.Future[bool] = self._loop.create_future()
        self._pending: dict[int, asyncio.Future[None]] = {}  # mid -> PUBACK/SUBACK waiter
        self._last_error = ""
        self._inbox: list[Incoming] = []
        self._arrived = asyncio.Event()
        self._socket: BufferedSocket | None = None
        self._fd = -1
        self._write_scheduled = False
        self._waiting_writable = False
        self._misc: asyncio.Task[None] | None = None
        # QoS 1 messages handed over and not acknowledged yet. At receive_maximum the socket is
        # not read until acknowledgements free room: the broker should stop there by itself
        # (Receive Maximum), but mosquitto 2.0.11 overshoots it by tens of thousands once acks
        # come in bursts (tests/mqtt/test_link.py), and this keeps memory and batches bounded.
        # Their payload bytes are bounded too (receive_max_bytes): a window of 10,000 messages of
        # 64 KB held 1.4 GB in the bridge under make bench-mqtt's hostile publishers.
        self._held = 0
        self._held_bytes = 0
        self._reading = False
        self._client = self._make_client()

    def _make_client(self) -> paho.Client:
        s = self.settings
        client = _Client(CallbackAPIVersion.VERSION2, client_id=s.client_id, protocol=paho.MQTTv5,
                             reconnect_on_failure=False, manual_ack=s.manual_ack)
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls.enabled:
            client.tls_set(ca_certs=str(s.tls.ca_file) if s.tls.ca_file else None,
                           certfile=str(s.tls.cert_file) if s.tls.cert_file else None,
                           keyfile=str(s.tls.key_file) if s.tls.key_file else None,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
            client.tls_insecure_set(s.tls.insecure)
        if s.will is not None:
            topic, payload, retain = s.will
            client.will_set(topic, payload, qos=1, retain=retain)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(10_000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_done
        client.on_subscribe = self._on_subscribed
        client.on_socket_register_write = self._schedule_write
        client.on_socket_close = self._socket_closing
        client.enable_logger(_errors_into(self))
        return client

    # --- driving paho from the event loop ---------------------------------------------------

    def _call(self, function: Any, *args: Any) -> None:
        """Run on the loop's thread (paho calls back from a worker thread while connecting)."""
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(function, *args)

    def _readable(self) -> None:
        client, sock = self._client, self._socket
        if sock is None:
            return
        # loop_read takes one packet at a time; the buffer may hold hundreds more. A slice at a
        # time, so that the rest of the loop (the store's answers, acks) is never starved.
        for _ in range(READ_SLICE):
            if self._full() or client.loop_read() != paho.MQTT_ERR_SUCCESS or not sock.readable_now:
                break
        else:
            self._loop.call_soon(self._readable)  # more is buffered here: no selector would say so
        if self._full() and self._reading and self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._reading = False
        if self._inbox:
            self._arrived.set()
        self._write()

    def _full(self) -> bool:
        return self._held >= self.settings.receive_maximum or self._held_bytes >= self.settings.receive_max_bytes

    def _schedule_write(self, *_: Any) -> None:
        # One write for everything paho queued meanwhile (a batch of acks is one send).
        if not self._write_scheduled:
            self._write_scheduled = True
            self._call(self._write)

    def _write(self) -> None:
        self._write_scheduled = False
        sock = self._socket
        if sock is None or self._client.socket() is not sock:
            return
        self._client.loop_write()
        self._flush()

    def _flush(self) -> None:
        sock = self._socket
        if sock is None or self._fd < 0:
            return
        try:
            done = sock.flush()
        except OSError as exc:
            self._last_error = f"send failed: {exc}"
            with contextlib.suppress(OSError):
                sock.sock.shutdown(2)  # paho's next read sees the end and reports the connection lost
            return
        if not done and not self._waiting_writable:
            self._loop.add_writer(self._fd, self._flush)
            self._waiting_writable = True
        elif done and self._waiting_writable:
            self._loop.remove_writer(self._fd)
            self._waiting_writable = False

    def _socket_closing(self, _client: Any, _userdata: Any, _sock: Any) -> None:
        if self._fd >= 0:
            self._reading = False
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._fd = -1

    async def _keepalive(self) -> None:
        while self._client.socket() is not None:
            self._client.loop_misc()
            self._write()
            await asyncio.sleep(MISC_EVERY_S)

    def _on_connect(self, _client: Any, _userdata: Any, flags: Any, reason: Any, _properties: Any) -> None:
        self._call(self._connected_now, not reason.is_failure, str(reason), bool(flags.session_present))

    def _connected_now(self, ok: bool, reason: str, session_present: bool) -> None:
        self.session_present = session_present
        if not self._connected.done():
            if ok:
                self._connected.set_result(session_present)
            else:
                self._connected.set_exception(LinkDown(f"the broker refused the connection: {reason}"))

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _properties: Any) -> None:
        why = f"{reason}: {self._last_error}" if self._last_error else str(reason)
        self._call(self._gone, f"disconnected ({why})")

    def _gone(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.lost.set()
        self._arrived.set()
        if not self._connected.done():
            self._connected.set_exception(LinkDown(reason))
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(LinkDown(reason))
        self._pending.clear()

    def _on_message(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        properties = getattr(message, "properties", None)
        incoming = Incoming(
            topic_bytes=bytes(message._topic), payload=bytes(message.payload), qos=message.qos, mid=message.mid,
            retain=bool(message.retain), response_topic=getattr(properties, "ResponseTopic", None),
            correlation=getattr(properties, "CorrelationData", None), link=self)
        self._inbox.append(incoming)  # on the loop's thread, inside _readable, which wakes take()
        if message.qos > 0 and self.settings.manual_ack:
            self._held += 1
            self._held_bytes += len(incoming.payload)

    def _on_done(self, _client: Any, _userdata: Any, mid: int, _reason: Any, _properties: Any) -> None:
        self._settle(mid)

    def _on_subscribed(self, _client: Any, _userdata: Any, mid: int, _reasons: Any, _properties: Any) -> None:
        self._settle(mid)

    def _settle(self, mid: int) -> None:
        waiter = self._pending.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- the asyncio side -------------------------------------------------------------------

    async def connect(self, timeout_s: float = 10.0) -> bool:
        """Connect and wait for the broker's CONNACK; whether it kept our session."""
        s = self.settings
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = s.session_expiry_s
        properties.ReceiveMaximum = s.receive_maximum
        try:
            await asyncio.to_thread(self._client.connect, s.host, s.port, s.keepalive_s,
                                    clean_start=s.session_expiry_s == 0, properties=properties)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise LinkDown(f"cannot reach {s.host}:{s.port}: {exc}") from None
        raw = self._client.socket()
        if raw is None:
            raise LinkDown(f"{s.host}:{s.port}: the connection closed at once")
        # paho keeps its socket in a private attribute: the buffer goes in there (paho-mqtt is pinned).
        self._socket = BufferedSocket(cast(socket.socket, raw))  # a socket or an SSL socket
        self._client._sock = self._socket
        self._fd = raw.fileno()
        self._loop.add_reader(self._fd, self._readable)
        self._reading = True
        self._misc = asyncio.create_task(self._keepalive())
        self._write()  # the CONNECT paho queued
        try:
            async with asyncio.timeout(timeout_s):
                return await self._connected
        except TimeoutError:
            await self.close()
            raise LinkDown(f"no answer from {s.host}:{s.port} within {timeout_s:g} s") from None
        except LinkDown:
            await self.close()
            raise

    async def take(self) -> list[Incoming]:
        """Every message that arrived since the last take, in order; waits for one. Empty once the link is lost."""
        while True:
            batch, self._inbox = self._inbox, []
            if batch or self.lost.is_set():
                return batch
            self._arrived.clear()
            await self._arrived.wait()

    def _waiter(self, mid: int) -> asyncio.Future[None]:
        waiter = self._loop.create_future()
        self._pending[mid] = waiter
        return waiter

    async def subscribe(self, filters: list[str], qos: int = 1, timeout_s: float = 10.0) -> None:
        if not filters:
            return
        result, mid = self._client.subscribe([(f, qos) for f in filters])
        if result != paho.MQTT_ERR_SUCCESS or mid is None:
            raise LinkDown(f"subscribe failed: {paho.error_string(result)}")
        async with asyncio.timeout(timeout_s):
            await self._waiter(mid)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                      properties: Properties | None = None, timeout_s: float = 10.0) -> int:
        """Publish; with QoS 1, return once the broker acknowledged it (PUBACK)."""
        if self.lost.is_set():
            raise LinkDown(self.reason or "not connected")
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise LinkDown(f"publish to {topic} failed: {paho.error_string(info.rc)}")
        if qos > 0:
            waiter = self._waiter(info.mid)
            if info.is_published():  # acknowledged before we started waiting
                self._settle(info.mid)
            try:
                async with asyncio.timeout(timeout_s):
                    await waiter
            except TimeoutError:
                self._pending.pop(info.mid, None)
                raise LinkDown(f"the broker did not acknowledge {topic} within {timeout_s:g} s") from None
        return int(info.mid)

    def ack(self, mid: int, qos: int, size: int = 0) -> None:
        """Acknowledge message ``mid``, whose payload was ``size`` bytes (freeing that much room)."""
        if self.lost.is_set():
            return
        self._client.ack(mid, qos)
        self._held -= 1
        self._held_bytes -= size
        if not self._reading and self._fd >= 0 and not self._full():
            self._loop.add_reader(self._fd, self._readable)
            self._reading = True
            self._loop.call_soon(self._readable)  # what is buffered here already wakes no selector

    async def close(self) -> None:
        """Disconnect cleanly (the will is not sent) and let go of the socket."""
        self.reason = self.reason or "closed"
        if self._client.socket() is not None:
            with contextlib.suppress(Exception):
                self._client.disconnect()
                self._write()  # paho writes the DISCONNECT and closes the socket (flushed first)
        if self._client.socket() is not None:  # it could not: close it here
            self._socket_closing(None, None, None)
            with contextlib.suppress(Exception):
                self._client._sock_close()
        if self._misc is not None:
            self._misc.cancel()
        self._gone(self.reason)


class _Client(paho.Client):
    """paho's client, minus its per-message search of message_callback_add filters (unused here):
    on_message is called directly. The search cost a tenth of the bridge's CPU at 10,000 messages/s."""

    def _handle_on_message(self, message: paho.MQTTMessage) -> None:
        if self.on_message is not None:
            self.on_message(self, self._userdata, message)


def _errors_into(link: MqttLink) -> logging.Logger:
    """A logger for paho that keeps its last error on ``link``: paho reports socket and TLS
    failures (a refused client certificate) only in its log. Below ERROR, paho's messages are
    never even formatted (an on_log callback would format one for every packet)."""

    class LastError(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            link._last_error = record.getMessage()[:300]

    logger = logging.Logger("appliance.mqtt.paho", logging.ERROR)
    logger.addHandler(LastError())
    return logger
