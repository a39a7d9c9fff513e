"""A small local HTTP API through which a training harness registers sandboxes and reads violations.

Guarantees:
- It listens on a loopback address (127.0.0.1 / ::1; anything else is refused at
  construction) or on a unix socket created with mode 0600. It is never reachable from
  the sandboxes or the network.
- Standard library only (http.server in one daemon thread, a thread per request);
  `stop()` shuts it down and removes the unix socket it created.
- Every answer is JSON. Bad requests get 400 with {"error": "one line"}; the API never
  raises into the daemon.

Endpoints (all JSON):
    GET    /v1/health                               {"ok": true, ...}
    GET    /v1/sandboxes                            {"entries": [{cidr, sandbox, episode, source, policy?}]}
    POST   /v1/sandboxes    {ip, sandbox, episode?, policy?}   -> 201 {"registered": entry}
    DELETE /v1/sandboxes/<ip>                       -> 200 {"unregistered": ip} | 404
    POST   /v1/sandboxes/unregister  {ip}           (the same, for clients without DELETE)
    GET    /v1/violations?sandbox=ID&episode=ID&limit=N   {"count": n, "violations": [...]}
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import ThreadingMixIn, UnixStreamServer
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, unquote, urlsplit

from egress.policy.attribution import Attribution, make_entry

log = logging.getLogger("egress.policy.api")
MAX_BODY = 64 * 1024


class _UnixHTTPServer(ThreadingMixIn, UnixStreamServer):
    daemon_threads = True


class _TCPServer(ThreadingHTTPServer):
    daemon_threads = True


class _V6TCPServer(_TCPServer):
    address_family = socket.AF_INET6


class AttributionAPI:
    """Serve `attribution` on host:port (loopback only) or on a unix socket path."""

    def __init__(self, attribution: Attribution, host: str = "127.0.0.1", port: int = 0,
                 unix_socket: str | None = None, policy_names: Callable[[], Iterable[str]] | None = None,
                 status: Callable[[], dict] | None = None):
        self.attribution = attribution
        self.policy_names = policy_names
        self.status = status
        self.unix_socket = unix_socket
        handler = self._handler_class()
        if unix_socket:
            if os.path.exists(unix_socket):
                if not stat.S_ISSOCK(os.lstat(unix_socket).st_mode):
                    raise ValueError("%s exists and is not a socket" % unix_socket)
                os.unlink(unix_socket)
            old = os.umask(0o177)
            try:
                self.server = _UnixHTTPServer(unix_socket, handler)
            finally:
                os.umask(old)
        else:
            if host != "localhost":
                try:
                    loopback = ipaddress.ip_address(host).is_loopback
                except ValueError:
                    loopback = False
                if not loopback:
                    raise ValueError("the sandbox API binds to loopback or a unix socket only, not %r" % host)
            cls = _V6TCPServer if ":" in host else _TCPServer
            self.server = cls((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> Any:
        return self.server.server_address

    @property
    def url(self) -> str:
        if self.unix_socket:
            return "unix:" + self.unix_socket
        host, port = self.server.server_address[:2]
        return "http://%s:%d" % ("[%s]" % host if ":" in host else host, port)

    def start(self) -> "AttributionAPI":
        self._thread = threading.Thread(target=self.server.serve_forever, name="egress-sandbox-api",
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server.server_close()
        if self.unix_socket and os.path.exists(self.unix_socket):
            try:
                os.unlink(self.unix_socket)
            except OSError:
                pass

    def __enter__(self) -> "AttributionAPI":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- request handling ----------------------------------------------------------------

    def _handler_class(self) -> type:
        api = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "egress-sandbox-api/1"
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("api: " + fmt, *args)

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def do_DELETE(self) -> None:
                self._dispatch("DELETE")

            def _dispatch(self, method: str) -> None:
                try:
                    code, body = api.handle(method, self.path, self._body())
                except _BadRequest as exc:
                    code, body = exc.code, {"error": str(exc)}
                except Exception as exc:  # never take the daemon down; say what happened
                    log.exception("sandbox API error")
                    code, body = 500, {"error": "internal error: %s" % type(exc).__name__}
                data = (json.dumps(body) + "\n").encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                length = self.headers.get("Content-Length")
                if not length:
                    return None
                try:
                    n = int(length)
                except ValueError:
                    raise _BadRequest("bad Content-Length") from None
                if n < 0 or n > MAX_BODY:
                    raise _BadRequest("body too large (max %d bytes)" % MAX_BODY, 413)
                raw = self.rfile.read(n)
                if not raw:
                    return None
                try:
                    return json.loads(raw)
                except ValueError:
                    raise _BadRequest("body is not JSON") from None

        return Handler

    def handle(self, method: str, target: str, body: Any) -> tuple[int, dict]:
        """The API as a function: (method, path?query, parsed JSON body) -> (status, JSON)."""
        parts = urlsplit(target)
        path = parts.path.rstrip("/")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if path == "/v1/health" and method == "GET":
            out = {"ok": True, "entries": len(self.attribution.entries())}
            if self.status:
                out.update(self.status())
            return 200, out
        if path == "/v1/sandboxes":
            if method == "GET":
                return 200, {"entries": [e.to_json() for e in self.attribution.entries()]}
            if method == "POST":
                return self._register(body)
            if method == "DELETE" and "ip" in query:
                return self._unregister(query["ip"])
        if path == "/v1/sandboxes/unregister" and method == "POST":
            if not isinstance(body, dict) or not isinstance(body.get("ip"), str):
                raise _BadRequest("expected a JSON object with 'ip'")
            return self._unregister(body["ip"])
        if path.startswith("/v1/sandboxes/") and method == "DELETE":
            return self._unregister(unquote(path[len("/v1/sandboxes/"):]))
        if path == "/v1/violations" and method == "GET":
            items = self.attribution.violations(query.get("sandbox"), query.get("episode"))
            if "limit" in query:
                try:
                    limit = max(0, int(query["limit"]))
                except ValueError:
                    raise _BadRequest("limit must be an integer") from None
                items = items[-limit:] if limit else []
            return 200, {"count": len(items), "violations": items}
        if path in ("/v1/health", "/v1/sandboxes", "/v1/violations", "/v1/sandboxes/unregister"):
            raise _BadRequest("method %s not allowed on %s" % (method, path), 405)
        raise _BadRequest("no such endpoint: %s" % path, 404)

    def _register(self, body: Any) -> tuple[int, dict]:
        if not isinstance(body, dict):
            raise _BadRequest("expected a JSON object with ip, sandbox and optional episode, policy")
        unknown = set(body) - {"ip", "cidr", "sandbox", "episode", "policy"}
        if unknown:
            raise _BadRequest("unknown field(s): %s" % ", ".join(sorted(unknown)))
        address = body.get("ip", body.get("cidr"))
        try:
            entry = make_entry(address, body.get("sandbox"), body.get("episode"), body.get("policy"), "api")
        except ValueError as exc:
            raise _BadRequest(str(exc)) from None
        if entry.policy is not None and self.policy_names is not None:
            names = set(self.policy_names())
            if entry.policy not in names:
                raise _BadRequest("unknown policy '%s' (known: %s)" % (entry.policy, ", ".join(sorted(names))))
        self.attribution.register(entry)
        return 201, {"registered": entry.to_json()}

    def _unregister(self, address: str) -> tuple[int, dict]:
        try:
            found = self.attribution.unregister(address)
        except ValueError as exc:
            raise _BadRequest(str(exc)) from None
        if not found:
            raise _BadRequest("%s is not registered through the API" % address, 404)
        return 200, {"unregistered": address}


class _BadRequest(Exception):
    def __init__(self, message: str, code: int = 400):
        super().__init__(message)
        self.code = code


def start_api(policy_engine: Any, listen: str, current: Callable[[], Any] | None = None) -> AttributionAPI:
    """For the daemon: `listen` is 'HOST:PORT' (loopback only) or 'unix:/path'; returns the running API.

    The API serves the PolicyEngine's Attribution, which `reload()` hands on to the next
    PolicyEngine, so registrations survive reloads. `current()` (optional) returns the
    PolicyEngine in use, so that policy names are checked against the newest rules."""
    def names() -> Iterable[str]:
        return (current() if current is not None else policy_engine).policy.policies.keys()

    if listen.startswith("unix:"):
        return AttributionAPI(policy_engine.attribution, unix_socket=listen[5:], policy_names=names).start()
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port_n = int(port)
    except ValueError:
        raise ValueError("the sandbox API address must be HOST:PORT or unix:/path, got %r" % listen) from None
    return AttributionAPI(policy_engine.attribution, host, port_n, policy_names=names).start()
