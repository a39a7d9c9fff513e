"""CryptoNote (XMRig / xmr-stak) and browser-miner message detection."""
from __future__ import annotations

import pytest

from egress.inspect.base import Status
from egress.inspect.xmr import CryptoNoteDetector, classify
from tests.inspect import mining_samples as ms
from tests.inspect.mining_helpers import S, grow, one_shot, signature, view

DET = CryptoNoteDetector()


@pytest.mark.parametrize("transcript", [ms.XMR_STAK, ms.XMRIG], ids=["xmr-stak", "xmrig"])
def test_login_sessions_match(transcript):
    result = one_shot(DET, transcript)
    assert result.status is Status.MATCH and signature(result) == "cryptonote.login"
    assert result.detections[0].category == "mining"


@pytest.mark.parametrize("transcript", [ms.XMR_STAK, ms.XMRIG], ids=["xmr-stak", "xmrig"])
def test_one_byte_segments(transcript):
    result, _ = grow(DET, transcript, step=1)
    assert result.status is Status.MATCH and signature(result) == "cryptonote.login"


def test_evidence_agent_algo_and_redacted_wallet():
    ev = one_shot(DET, ms.XMRIG).detections[0].evidence
    assert ev["agent"].startswith("XMRig/6.21.0")
    assert ev["algo"] == "cn/1,cn/2,cn/r,rx/0"
    assert ev["worker"] == "44AFFq5k\u2026.rig1"
    ev = one_shot(DET, ms.XMR_STAK).detections[0].evidence
    assert ev["worker"] == "4BCeEPho\u2026.cb2b7341\u2026.ryzen"     # wallet and payment id cut


def test_server_side_only_job_notification_mid_session():
    down = b"".join(d for k, d in ms.XMR_STAK if k == S)
    cut = down[down.index(b'{"jsonrpc":"2.0","method":"job"') - 11:]
    result = DET.inspect(view(b"", cut))
    assert result.status is Status.MATCH and signature(result) == "cryptonote.job"


def test_login_answer_alone_is_enough():
    result = DET.inspect(view(b"", ms.XMR_STAK[1][1]))
    assert result.status is Status.MATCH and signature(result) == "cryptonote.login"
    assert result.detections[0].evidence["method"] == "login(result)"


def test_client_submit_only_and_keepalived():
    result = DET.inspect(view(ms.XMR_STAK[2][1], b""))
    assert result.status is Status.MATCH and signature(result) == "cryptonote.submit"
    result = DET.inspect(view(ms.XMRIG[1][1], b""))
    assert result.status is Status.MATCH and signature(result) == "cryptonote.keepalived"


def test_without_jsonrpc_field_and_with_it():
    with_field = b'{"id":1,"jsonrpc":"2.0","method":"submit","params":{"id":"1","job_id":"2","nonce":"98024001",' \
                 b'"result":"c9be9381a68d533c059d614d961e0534d7d8785dd5c339c2f9596eb95f320100"}}\n'
    without = with_field.replace(b'"jsonrpc":"2.0",', b"")
    assert DET.inspect(view(with_field)).status is Status.MATCH
    assert DET.inspect(view(without)).status is Status.MATCH


def test_web_login_is_not_a_miner():
    # {"method":"login","params":{"login","pass"}} without miner fields or a job is not mining
    assert one_shot(DET, ms.JSON_LINES_API).status is Status.NO_MATCH


@pytest.mark.parametrize("obj", [
    {"method": "job", "params": {"blob": "zz", "job_id": "1", "target": "dc460300"}},          # blob not hex
    {"method": "submit", "params": {"job_id": "1", "nonce": "1", "result": "ab"}},             # too short
    {"method": "keepalived", "params": []},
    {"type": "auth", "params": {"user": "x"}},                                                   # no site key
    {"id": 1, "result": {"job": {"blob": "00", "job_id": 1, "target": "ff"}}},                   # blob too short
])
def test_wrong_shapes(obj):
    assert classify(obj) is None


def test_browser_miner_messages_classified():
    import json
    hits = [classify(json.loads(d)) for _, d in ms.COINHIVE]
    assert [h.signature for h in hits] == ["browser_miner.auth", "browser_miner.authed", "browser_miner.job",
                                           "browser_miner.submit"]


def test_monero_p2p_is_not_pool_protocol():
    assert one_shot(DET, ms.MONERO_P2P).status is Status.NO_MATCH
    assert DET.inspect(view(ms.MONERO_P2P[0][1][:30], b"")).status is Status.NO_MATCH
