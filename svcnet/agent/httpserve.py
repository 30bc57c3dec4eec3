"""Small HTTP servers whose listening sockets live in a network namespace (I/O).

The agent answers HTTP in its node's namespace: its own ``/healthz``, ``/livez``
and ``/metrics`` (:class:`HTTPEndpoint`) and one health-check node port per
LoadBalancer service with ``externalTrafficPolicy: Local``
(:class:`svcnet.agent.health.HealthCheckPorts`). Both sit on :class:`Listeners`:

* sockets are made and bound by :func:`bind` inside
  :func:`svcnet.kernel.setns.entered` (a socket keeps the namespace it was created
  in), then served from ordinary threads that never enter anything;
* one acceptor thread watches every listening socket of a :class:`Listeners`
  (an ``epoll`` selector and a wake-up pipe), so a thousand health-check ports
  cost one thread, not a thousand; each accepted connection is answered on a
  short-lived daemon thread (at most :data:`MAX_CONNECTIONS` at once, the rest
  are closed unanswered), one request per connection (HTTP/1.0, the connection
  closes after the answer);
* :meth:`Listeners.remove` closes a listening socket before it returns: a client
  connecting afterwards is refused.

The standard library's ``http.server`` parses requests; only ``GET`` and ``HEAD``
are answered (other methods get its 501).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import selectors
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any

import attrs

from svcnet.errors import SvcnetError
from svcnet.kernel.setns import entered

__all__ = [
    "MAX_CONNECTIONS",
    "REQUEST_TIMEOUT",
    "AddressError",
    "HTTPEndpoint",
    "Listeners",
    "Response",
    "Route",
    "bind",
    "parse_address",
]

LOGGER = "svcnet.agent.http"
MAX_CONNECTIONS = 64  # connections answered at once by one Listeners; more are closed
REQUEST_TIMEOUT = 5.0  # s a client may take to send its request
BACKLOG = 128

Route = Callable[[], tuple[int, str, bytes]]  # () -> (status, content type, body)


class AddressError(SvcnetError, ValueError):
    """A listen address option is malformed (``host:port``, ``[v6]:port``, ``:port``)."""


@attrs.frozen
class Response:
    """One HTTP answer: status, content type, body and any extra headers."""

    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[str], Response]  # the request path (query included) -> the answer


def parse_address(text: str, *, what: str = "address") -> tuple[str, int]:
    """``"0.0.0.0:10256"``, ``"[::]:10256"`` or ``":10256"`` (every address) as
    ``(host, port)``; the host is an IP literal or ``""``. Raises
    :class:`AddressError` naming ``what`` (the option) and the value when bad."""

    def bad(why: str) -> AddressError:
        return AddressError(f"{what} {text!r}: {why} (expected HOST:PORT, [IPv6]:PORT or :PORT)")

    if not isinstance(text, str) or not text.strip():
        raise bad("empty")
    value = text.strip()
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise bad("no port")
    if host.startswith("["):
        if not host.endswith("]"):
            raise bad("unclosed '['")
        host = host[1:-1]
        try:
            if ipaddress.ip_address(host).version != 6:
                raise bad(f"{host!r} in brackets is not an IPv6 address")
        except ValueError:
            raise bad(f"{host!r} is not an IPv6 address") from None
    elif host:
        if ":" in host:
            raise bad("an IPv6 address must be in brackets")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise bad(f"{host!r} is not an IP address") from None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise bad(f"port {port_text!r} is not a number in 0-65535")
    return host, int(port_text)


def _socket(host: str) -> tuple[socket.socket, str]:
    """A TCP socket for ``host``; ``""`` is every address of both families (an
    IPv6 socket that also takes IPv4), or IPv4's when the kernel has no IPv6."""
    if host and ipaddress.ip_address(host).version == 4:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM), host
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError as e:
        if host or e.errno != errno.EAFNOSUPPORT:
            raise
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM), "0.0.0.0"
    if not host:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    return sock, host or "::"


def bind(netns: str | None, addresses: Iterable[tuple[str, int]]) -> list[socket.socket | OSError]:
    """Listening TCP sockets made inside ``netns`` (None: where this thread is),
    one per ``(host, port)``, in order; an address that cannot be bound gives its
    :class:`OSError` in its place. Raises only when the namespace cannot be entered
    (:class:`svcnet.kernel.setns.NamespaceError`)."""
    out: list[socket.socket | OSError] = []
    with entered(netns):
        for host, port in addresses:
            sock: socket.socket | None = None
            try:
                sock, where = _socket(host)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((where, port))
                sock.listen(BACKLOG)
                sock.setblocking(False)
                out.append(sock)
            except OSError as e:
                if sock is not None:
                    sock.close()
                out.append(e)
    return out


class _RequestHandler(BaseHTTPRequestHandler):
    """Answers one request with the :data:`Handler` the listener was given."""

    server_version = "svcnet"
    sys_version = ""
    timeout = REQUEST_TIMEOUT
    answer: Handler  # set per connection by _ConnServer
    logger: logging.Logger

    def __init__(self, request: Any, client_address: Any, server: _ConnServer) -> None:
        self.answer = server.handler
        self.logger = server.logger
        super().__init__(request, client_address, server)  # type: ignore[arg-type]

    def _respond(self, with_body: bool) -> None:
        try:
            resp = self.answer(self.path)
        except Exception:  # a route failing must not kill the server: 500
            self.logger.exception("HTTP %s %s failed", self.command, self.path)
            resp = Response(500, "text/plain; charset=utf-8", b"internal error\n")
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in resp.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if with_body:
            self.wfile.write(resp.body)

    def do_GET(self) -> None:
        self._respond(True)

    def do_HEAD(self) -> None:
        self._respond(False)

    def log_message(self, format: str, *args: Any) -> None:
        self.logger.debug("HTTP %s: " + format, self.client_address, *args)


@attrs.define
class _ConnServer:
    """What :class:`_RequestHandler` reads from its ``server`` argument."""

    handler: Handler
    logger: logging.Logger


class Listeners:
    """Listening sockets served by one acceptor thread (started with the first one).

    :meth:`add` serves a bound socket with a handler, :meth:`remove` closes it at
    once, :meth:`close` closes them all and ends the thread. Thread-safe."""

    def __init__(self, name: str = "svcnet-http", *, logger: logging.Logger | None = None) -> None:
        self.name = name
        self.logger = logger or logging.getLogger(LOGGER)
        self._lock = threading.Lock()
        self._socks: dict[int, tuple[socket.socket, _ConnServer]] = {}
        self._selector: selectors.BaseSelector | None = None
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._closed = False
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def _start(self) -> selectors.BaseSelector:
        if self._selector is None:
            self._selector = selectors.DefaultSelector()
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._selector.register(self._wake_r, selectors.EVENT_READ)
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self._selector

    def add(self, sock: socket.socket, handler: Handler) -> None:
        """Serve the listening socket ``sock`` (non-blocking) with ``handler``."""
        with self._lock:
            if self._closed:
                sock.close()
                raise RuntimeError(f"{self.name}: closed")
            selector = self._start()
            self._socks[sock.fileno()] = (sock, _ConnServer(handler, self.logger))
            selector.register(sock, selectors.EVENT_READ)

    def remove(self, sock: socket.socket) -> None:
        """Stop serving ``sock`` and close it (clients are refused from now on)."""
        with self._lock:
            fd = sock.fileno()
            entry = self._socks.get(fd) if fd >= 0 else None
            if entry is not None and entry[0] is sock:
                del self._socks[fd]
                if self._selector is not None:
                    with contextlib.suppress(KeyError, ValueError, OSError):
                        self._selector.unregister(sock)
            sock.close()

    def close(self) -> None:
        """Close every socket and end the acceptor thread (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            socks = [s for s, _ in self._socks.values()]
            self._socks.clear()
            for sock in socks:
                if self._selector is not None:
                    with contextlib.suppress(KeyError, ValueError, OSError):
                        self._selector.unregister(sock)
                sock.close()
            if self._wake_w >= 0:
                with contextlib.suppress(OSError):
                    os.write(self._wake_w, b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        with self._lock:
            if self._selector is not None:
                self._selector.close()
                for fd in (self._wake_r, self._wake_w):
                    with contextlib.suppress(OSError):
                        os.close(fd)
                self._wake_r = self._wake_w = -1

    def _run(self) -> None:
        selector = self._selector
        assert selector is not None
        while True:
            try:
                events = selector.select()
            except (OSError, ValueError):  # closed under us
                return
            for key, _ in events:
                if key.fileobj == self._wake_r:
                    with contextlib.suppress(OSError):
                        while os.read(self._wake_r, 512):
                            pass
                    continue
                self._accept(key.fileobj)  # type: ignore[arg-type]
            if self._closed:
                return

    def _accept(self, sock: socket.socket) -> None:
        with self._lock:
            fd = sock.fileno()
            entry = self._socks.get(fd) if fd >= 0 else None
            if entry is None or entry[0] is not sock:
                return  # removed since the select
            try:
                conn, peer = sock.accept()
            except OSError:  # BlockingIOError: another wake-up took it; or closed
                return
        if not self._slots.acquire(blocking=False):
            self.logger.warning(
                "%s: %d connections at once, closing one", self.name, MAX_CONNECTIONS
            )
            conn.close()
            return
        conn.setblocking(True)
        threading.Thread(
            target=self._serve, args=(conn, peer, entry[1]), name=f"{self.name}-conn", daemon=True
        ).start()

    def _serve(self, conn: socket.socket, peer: Any, server: _ConnServer) -> None:
        try:
            _RequestHandler(conn, peer, server)
        except Exception as e:  # a client going away mid-answer
            self.logger.debug("%s: connection from %s: %s", self.name, peer, e)
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            self._slots.release()


class HTTPEndpoint:
    """The agent's own HTTP server: ``routes`` (path -> ``() -> (status, content
    type, body)``) on ``address`` (``"host:port"``, ``"[::]:10256"``, ``":10256"``;
    port 0 picks one, see :attr:`port`) inside ``netns``. Unknown paths: 404; the
    query string is ignored. :meth:`start` binds (raising :class:`AddressError`
    when it cannot), :meth:`close` frees the port."""

    def __init__(
        self,
        netns: str | None,
        address: str,
        routes: Mapping[str, Route],
        *,
        logger: logging.Logger | None = None,
    ) -> None:
        self.netns = netns
        self.address = address
        self.host, self._port = parse_address(address)
        self.routes = dict(routes)
        self._listeners = Listeners(f"svcnet-http-{self._port}", logger=logger)
        self._sock: socket.socket | None = None
        self._bound = self._port

    def _answer(self, path: str) -> Response:
        route = self.routes.get(path.split("?", 1)[0])
        if route is None:
            return Response(404, "text/plain; charset=utf-8", b"404 page not found\n")
        status, content_type, body = route()
        return Response(status, content_type, body)

    def start(self) -> None:
        """Bind the address in the namespace and serve (once)."""
        if self._sock is not None:
            return
        (got,) = bind(self.netns, [(self.host, self._port)])
        if isinstance(got, OSError):
            where = f" in network namespace {self.netns}" if self.netns else ""
            raise AddressError(f"cannot listen on {self.address!r}{where}: {got.strerror or got}")
        self._sock = got
        self._bound = int(got.getsockname()[1])
        self._listeners.add(got, self._answer)

    @property
    def port(self) -> int:
        """The port bound (the one asked for, or the kernel's pick for 0)."""
        return self._bound

    def close(self) -> None:
        """Stop serving and free the port."""
        self._listeners.close()
        self._sock = None

    def __enter__(self) -> HTTPEndpoint:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
