"""HTTP/1.x detector: real requests (curl, Python's http.client), CONNECT, WebSocket upgrade,
byte-by-byte prefixes, fuzz."""
from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import threading

import pytest
from hypothesis import given, settings, strategies as st

from egress.inspect.base import Status, StreamView
from egress.inspect.http import HttpDetector

try:
    from protocols_pcap import assert_consistent_prefixes
except ImportError:
    from tests.inspect.protocols_pcap import assert_consistent_prefixes

DET = HttpDetector()
V4 = b"\x0a\x00\x00\x01"
RESPONSE = b"HTTP/1.1 204 No Content\r\nServer: test\r\nContent-Length: 0\r\n\r\n"


def view(c: bytes, s: bytes = b"", closed=False) -> StreamView:
    return StreamView(6, V4, 40000, b"\x0a\x00\x00\x02", 8080, c, s, closed_to_server=closed,
                      closed_to_client=closed, sizes=((0.0, 0, len(c)), (0.1, 1, len(s))) if s else ((0.0, 0, len(c)),))


def capture_request(send) -> bytes:
    """Run a real HTTP client against a loopback socket; return the bytes it sent."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    t = threading.Thread(target=send, args=(srv.getsockname()[1],), daemon=True)
    t.start()
    conn, _ = srv.accept()
    conn.settimeout(5)
    got = b""
    try:
        while b"\r\n\r\n" not in got:
            chunk = conn.recv(4096)
            if not chunk:
                break
            got += chunk
        conn.sendall(RESPONSE)
    finally:
        conn.close()
        srv.close()
        t.join(10)
    return got


def test_python_http_client_request():
    def send(port):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            c.request("GET", "/simple/requests/", headers={"Host": "PyPI.org", "User-Agent": "pip/24.0"})
            c.getresponse().read()
        except OSError:
            pass
        finally:
            c.close()
    req = capture_request(send)
    r = assert_consistent_prefixes(DET, view(req, RESPONSE, closed=True), fine=len(req))
    assert r.app_proto == "http" and r.status is Status.MATCH
    assert r.facts["http.method"] == "GET" and r.facts["http.uri"] == "/simple/requests/"
    assert r.facts["http.host"] == "pypi.org"
    assert r.facts["http.user_agent"] == "pip/24.0"
    assert r.facts["http.status"] == 204


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_request_with_port_in_host():
    def send(port):
        subprocess.run(["curl", "-s", "-m", "5", "-o", "/dev/null", "http://127.0.0.1:%d/x?y=1" % port],
                       capture_output=True, timeout=10)
    req = capture_request(send)
    r = DET.inspect(view(req, RESPONSE))
    assert r.facts["http.host"] == "127.0.0.1" and isinstance(r.facts["http.host_port"], int)
    assert r.facts["http.user_agent"].startswith("curl/")
    assert r.facts["http.uri"] == "/x?y=1"


def test_connect_and_websocket_upgrade():
    r = DET.inspect(view(b"CONNECT github.com:443 HTTP/1.1\r\nHost: github.com:443\r\n\r\n",
                         b"HTTP/1.1 200 Connection established\r\n\r\n"))
    assert r.facts["http.method"] == "CONNECT" and r.facts["http.connect_target"] == "github.com:443"
    assert r.facts["http.host"] == "github.com" and r.facts["http.host_port"] == 443
    r = DET.inspect(view(b"GET /ws HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\nUpgrade: WebSocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Protocol: chat\r\n\r\n"))
    assert r.facts["http.upgrade"] == "websocket" and r.facts["http.websocket_protocol"] == "chat"
    assert r.facts["http.host"] == "2001:db8::1" and r.facts["http.host_port"] == 8443
    assert r.status is Status.NEED_MORE       # waiting for the response


def test_not_http_and_http2():
    for data in (b"SSH-2.0-OpenSSH_9.2\r\n", b"\x16\x03\x01\x00\x05hello", b"GETX / HTTP/1.1\r\n\r\n",
                 b"GET / FTP/1.0\r\n\r\n", b"{\"id\":1,\"method\":\"mining.subscribe\"}\n"):
        assert DET.inspect(view(data, closed=True)).status is Status.NO_MATCH
    assert DET.inspect(view(b"GE")).status is Status.NEED_MORE
    h2 = DET.inspect(view(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00"))
    assert h2.app_proto == "http2"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.binary(max_size=100), st.booleans())
def test_fuzz_never_raises(c, s, closed):
    assert DET.inspect(view(c, s, closed)).status in set(Status)
    assert DET.inspect(view(b"GET " + c, b"HTTP/1.1 " + s, closed)).status in set(Status)
