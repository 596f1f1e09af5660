"""Small real HTTP servers on loopback for fetcher tests: a canary that counts connections, and a
scripted image server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Canary:
    """A TCP listener that only counts connections (it must see none when fetching is refused)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._sock = socket.socket()
        self._sock.bind((host, 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


Route = Callable[[BaseHTTPRequestHandler], None]


class ScriptedServer:
    """ThreadingHTTPServer whose GET handler is a per-path function; records requests."""

    def __init__(self, routes: dict[str, Route], host: str = "127.0.0.1") -> None:
        self.requests: list[tuple[str, dict]] = []
        self._routes = routes
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                outer.requests.append((self.path, dict(self.headers)))
                route = outer._routes.get(self.path.split("?")[0])
                if route is None:
                    self.send_error(404)
                else:
                    route(self)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def add(self, path: str, data: bytes, content_type: str = "image/jpeg") -> None:
        """Serve `data` at `path` from now on."""
        self.route(path, send_bytes(data, content_type))

    def route(self, path: str, handler: Route) -> None:
        """Answer GET `path` with `handler` from now on."""
        self._routes[path] = handler

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def send_bytes(data: bytes, content_type: str = "image/png", status: int = 200) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return route


def redirect_to(location: str) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route
