"""The local review server: stdlib ``http.server`` on 127.0.0.1, every route behind a secret path prefix.

Routes (all below ``/<key>/``, the random key printed with the URL, so another
local user or a web page cannot read the private images by guessing the port)::

    GET  /<key>/                 the page         GET  /<key>/app.js, /<key>/app.css
    GET  /<key>/api/state        progress         GET  /<key>/api/trial/<n>   one trial (ids, slots, image URLs)
    POST /<key>/api/answer       {"id": "...", "slot": 0..K-1 | null}
    GET  /<key>/img/<token>      one PNG

Nothing maps a URL to a file: the page's three files are a fixed list read from
the package, images exist only behind tokens the server made. Anything else is
404 (a wrong key 403), and so is a request whose ``Host`` is not this address
(DNS rebinding). Responses are ``no-store`` with a same-origin content policy.
"""

from __future__ import annotations

import json
import secrets
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from ..errors import MidefendError
from .session import ReviewSession

__all__ = ["ReviewServer", "make_server"]

HOST = "127.0.0.1"
_STATIC = {"": ("index.html", "text/html; charset=utf-8"), "app.js": ("app.js", "text/javascript; charset=utf-8"), "app.css": ("app.css", "text/css; charset=utf-8")}
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; connect-src 'self'; frame-ancestors 'none'",
}
_MAX_BODY = 4096


def static_text(name: str) -> str:
    """One of the page's files, from the package (``index.html``, ``app.js``, ``app.css``)."""
    return resources.files("midefend.review").joinpath("static", name).read_text(encoding="utf-8")


class ReviewServer(ThreadingHTTPServer):
    """A :class:`ThreadingHTTPServer` serving one :class:`ReviewSession`; ``url`` is the page's address."""

    daemon_threads = True

    def __init__(self, session: ReviewSession, port: int = 0, key: str | None = None) -> None:
        self.session = session
        self.key = key or secrets.token_urlsafe(16)
        super().__init__((HOST, port), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/{self.key}/"


class _Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # no access log: the URLs carry the key

    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        for name, value in _HEADERS.items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: Any, status: int = 200) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _route(self) -> str | None:
        """The path below ``/<key>/``; ``None`` after answering a bad host or key."""
        host = (self.headers.get("Host") or "").lower()
        if host not in (f"{HOST}:{self.server.port}", f"localhost:{self.server.port}"):
            self._send(HTTPStatus.FORBIDDEN, b"forbidden host\n")
            return None
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        prefix = f"/{self.server.key}/"
        if path == prefix[:-1]:
            self.send_response(HTTPStatus.FOUND)
            self.send_header("Location", prefix)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if not path.startswith(prefix):
            self._send(HTTPStatus.FORBIDDEN, b"forbidden\n")
            return None
        return path[len(prefix):]

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        route = self._route()
        if route is None:
            return
        session = self.server.session
        if route in _STATIC:
            name, kind = _STATIC[route]
            self._send(HTTPStatus.OK, static_text(name).encode(), kind)
        elif route == "api/state":
            self._json(session.state())
        elif route.startswith("api/trial/") and route[len("api/trial/"):].isdigit():
            try:
                self._json(session.trial_payload(int(route[len("api/trial/"):])))
            except MidefendError as exc:
                self._json({"error": str(exc)}, HTTPStatus.NOT_FOUND)
        elif route.startswith("img/") and "/" not in route[4:]:
            png = session.image(route[4:])
            if png is None:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n")
            else:
                self._send(HTTPStatus.OK, png, "image/png")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n")

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_POST(self) -> None:  # noqa: N802
        route = self._route()
        if route is None:
            return
        if route != "api/answer":
            self._send(HTTPStatus.NOT_FOUND, b"not found\n")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= _MAX_BODY or "json" not in (self.headers.get("Content-Type") or ""):
            self._send(HTTPStatus.BAD_REQUEST, b"expected a small JSON body\n")
            return
        try:
            body = json.loads(self.rfile.read(length))
            slot = body.get("slot")
            if slot is not None and (isinstance(slot, bool) or not isinstance(slot, int)):
                raise ValueError("slot must be an integer or null")
            self._json(self.server.session.answer(str(body["id"]), slot))
        except (ValueError, KeyError, TypeError, AttributeError, MidefendError) as exc:
            self._json({"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}, HTTPStatus.BAD_REQUEST)


def make_server(session: ReviewSession, *, port: int = 0, key: str | None = None) -> ReviewServer:
    """A server for ``session`` on 127.0.0.1 (``port=0``: a free port); call ``serve_forever()``."""
    return ReviewServer(session, port, key)
