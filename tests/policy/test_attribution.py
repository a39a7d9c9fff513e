"""Attribution: mapping file (YAML/JSON), longest prefix, API over loopback and a unix socket,
registrations surviving reloads, violations queried per sandbox and episode."""
from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import urllib.error
import urllib.request

import pytest

from egress.policy import PolicyEngine, PolicyError, parse_sandbox_map
from egress.policy.api import AttributionAPI, start_api
from egress.types import Action
from tests.policy.helpers import make_flow, policy_text

MAP_YAML = """\
version: 1
entries:
  - cidr: 10.88.0.0/24
    sandbox: pool-a
    episode: ep-1
  - ip: 10.88.0.7
    sandbox: sbx-7
    episode: 42
    policy: strict
"""
RULES = policy_text("      - name: no-ssh\n        action: reject\n        ports: [22]\n") + \
    "  strict:\n    mode: enforce\n    rules: []\n    default: drop\n"
RULES = RULES.replace("version: 1\n", "version: 1\ndefault_policy: p\n")


@pytest.fixture
def files(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    smap = tmp_path / "map.yaml"
    smap.write_text(MAP_YAML)
    return rules, smap


def test_mapping_file_longest_prefix_and_policy_override(files):
    rules, smap = files
    e = PolicyEngine.load([str(rules)], sandbox_map=str(smap))
    assert e.attribute(make_flow("10.88.0.7")) == {"id": "sbx-7", "episode": "42"}
    assert e.attribute(make_flow("10.88.0.8")) == {"id": "pool-a", "episode": "ep-1"}
    assert e.attribute(make_flow("10.89.0.8")) is None
    assert e.decide(make_flow("10.88.0.7", dport=443), 1.0).action is Action.DROP     # its policy: strict
    assert e.decide(make_flow("10.88.0.8", dport=443), 1.0).action is Action.ALLOW


def test_example_map_is_valid_and_works_with_the_per_sandbox_rules():
    from pathlib import Path
    repo = Path(__file__).resolve().parents[2]
    e = PolicyEngine.load([str(repo / "rules" / "examples" / "per-sandbox.yaml")],
                          sandbox_map=str(repo / "rules" / "examples" / "sandbox-map.yaml"))
    assert e.attribute(make_flow("10.88.0.12")) == {"id": "sbx-12", "episode": "ep-000451"}
    assert e.attribute(make_flow("10.88.7.7")) == {"id": "rl-pool", "episode": None}
    assert e.policy_for(make_flow("10.88.0.13")).name == "training"


def test_json_mapping_file_and_bare_list(tmp_path):
    entries = parse_sandbox_map("m.json", json.dumps({"version": 1, "entries": [
        {"cidr": "fd88::/64", "sandbox": "v6", "episode": "e"}]}))
    assert entries[0].network == "fd88::/64"
    entries = parse_sandbox_map("m.yaml", "- {ip: 10.0.0.1, sandbox: s}\n")
    assert entries[0].episode is None


@pytest.mark.parametrize("text,line,fragment", [
    ("version: 1\nentries:\n  - cidr: 10.0.0.1/8\n    sandbox: s\n", 3, "host bits"),
    ("version: 1\nentries:\n  - cidr: 10.0.0.0/8\n    sandbox: s\n    epsiode: 1\n", 5, "did you mean 'episode'?"),
    ("version: 1\nentries:\n  - cidr: 10.0.0.0/8\n", 3, "needs 'cidr:' (or 'ip:') and 'sandbox:'"),
    ("version: 1\nentries:\n  - cidr: 10.0.0.0/8\n    sandbox: ''\n", 4, "sandbox must be a non-empty id"),
    ("version: 1\nentries:\n  - {cidr: 10.0.0.0/8, sandbox: a}\n  - {cidr: 10.0.0.0/8, sandbox: b}\n", 4, "already mapped at line 3"),
    ("version: 1\nentries: {a: 1}\n", 2, "entries must be a list"),
    ("version: 2\nentries: []\n", 1, "unsupported version"),
    ('{"entries": [{"cidr": "x", "sandbox": "s"}]}', 1, "not a valid address"),
])
def test_mapping_file_errors_have_lines(text, line, fragment):
    with pytest.raises(PolicyError) as info:
        parse_sandbox_map("m.yaml", text)
    assert any(e[1] == line and fragment in e[2] for e in info.value.errors), info.value.errors


def test_reload_rereads_the_map_and_keeps_api_registrations(files):
    rules, smap = files
    e1 = PolicyEngine.load([str(rules)], sandbox_map=str(smap))
    from egress.policy.attribution import make_entry
    e1.attribution.register(make_entry("10.77.0.1", "api-sbx", "ep-9"))
    smap.write_text(MAP_YAML.replace("pool-a", "pool-b"))
    e2 = e1.reload()
    assert e2.attribute(make_flow("10.88.0.8"))["id"] == "pool-b"
    assert e2.attribute(make_flow("10.77.0.1")) == {"id": "api-sbx", "episode": "ep-9"}
    smap.write_text("version: 1\nentries:\n  - cidr: nonsense\n    sandbox: x\n")
    with pytest.raises(PolicyError):
        e2.reload()
    assert e2.attribute(make_flow("10.88.0.8"))["id"] == "pool-b"     # the old map stays in force


# -- the HTTP API ------------------------------------------------------------------------------

def call(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def api_engine(files):
    rules, smap = files
    e = PolicyEngine.load([str(rules)], sandbox_map=str(smap))
    api = start_api(e, "127.0.0.1:0")
    try:
        yield e, api.url
    finally:
        api.stop()


def test_api_register_query_and_violations_over_loopback(api_engine):
    e, base = api_engine
    status, body = call(base, "POST", "/v1/sandboxes", {"ip": "10.99.0.5", "sandbox": "sbx-99", "episode": "ep-3"})
    assert status == 201 and body["registered"]["cidr"] == "10.99.0.5/32"
    status, body = call(base, "GET", "/v1/sandboxes")
    assert {x["sandbox"] for x in body["entries"]} == {"sbx-99", "pool-a", "sbx-7"}

    flow = make_flow("10.99.0.5", dport=22)
    flow.sandbox = e.attribute(flow)                         # what the engine does at flow start
    assert flow.sandbox == {"id": "sbx-99", "episode": "ep-3"}
    assert e.decide(flow, 1700000000.0).action is Action.REJECT
    e.decide(flow, 1700000001.0)                              # decided again: recorded once
    e.decide(make_flow("10.88.0.9", dport=443, sandbox={"id": "pool-a", "episode": "ep-1"}), 1.0)   # allowed
    status, body = call(base, "GET", "/v1/violations?sandbox=sbx-99&episode=ep-3")
    assert status == 200 and body["count"] == 1
    v = body["violations"][0]
    assert (v["rule"], v["action"], v["dest_port"], v["sandbox"]) == ("no-ssh", "reject", 22, {"id": "sbx-99", "episode": "ep-3"})
    assert call(base, "GET", "/v1/violations?sandbox=sbx-99&episode=other")[1]["count"] == 0
    assert call(base, "GET", "/v1/violations")[1]["count"] == 1

    assert call(base, "DELETE", "/v1/sandboxes/10.99.0.5")[0] == 200
    assert call(base, "DELETE", "/v1/sandboxes/10.99.0.5")[0] == 404
    assert e.attribute(make_flow("10.99.0.5")) is None


@pytest.mark.parametrize("body,fragment", [
    ({"ip": "10.0.0.1/33", "sandbox": "s"}, "not a valid address"),
    ({"ip": "10.0.0.1"}, "sandbox must be"),
    ({"ip": "10.0.0.1", "sandbox": "s", "policy": "nope"}, "unknown policy 'nope'"),
    ({"ip": "10.0.0.1", "sandbox": "s", "colour": "red"}, "unknown field"),
    ([1, 2], "expected a JSON object"),
])
def test_api_rejects_bad_registrations(api_engine, body, fragment):
    status, answer = call(api_engine[1], "POST", "/v1/sandboxes", body)
    assert status == 400 and fragment in answer["error"]


def test_api_unknown_path_and_not_json(api_engine):
    base = api_engine[1]
    assert call(base, "GET", "/v2/nothing")[0] == 404
    host, port = base[len("http://"):].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("POST", "/v1/sandboxes", body=b"{not json", headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 400 and "not JSON" in json.loads(resp.read())["error"]
    conn.close()


def test_api_refuses_non_loopback_addresses(files):
    e = PolicyEngine.load([str(files[0])])
    with pytest.raises(ValueError, match="loopback"):
        AttributionAPI(e.attribution, host="0.0.0.0")


def test_api_on_a_unix_socket_is_private(files, tmp_path):
    e = PolicyEngine.load([str(files[0])])
    path = str(tmp_path / "api.sock")
    api = start_api(e, "unix:" + path)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(path)
        body = json.dumps({"ip": "10.5.5.5", "sandbox": "u", "episode": "e"}).encode()
        s.sendall(b"POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        assert data.startswith(b"HTTP/1.1 201")
        assert e.attribute(make_flow("10.5.5.5")) == {"id": "u", "episode": "e"}
    finally:
        api.stop()
    assert not os.path.exists(path)
