"""Stratum v2 detector: the shape of its Noise NX handshake (a weak signal, confidence < 1).

Stratum v2 encrypts from the first byte. Its handshake (Noise_NX with secp256k1
ElligatorSwift keys) still has a fixed shape: the initiator's first write is exactly
64 bytes (its ephemeral key), the responder answers with exactly 234 bytes
(ephemeral 64 + encrypted static key 80 + encrypted signature 90), and neither side
sends anything else before that. This detector requires:

- the first payload packet goes to the server and is 64 bytes, the second comes
  back and is 234 bytes (`view.sizes`), and the stream prefixes hold exactly those
  bytes at that point (nothing else was written first);
- both look random (ElligatorSwift keys and ciphertext are indistinguishable from
  random bytes): no long runs of one byte, not mostly printable ASCII.

Other protocols with a 64-byte hello and a 234-byte reply would match, hence the
confidence of 0.6: the policy should combine it with other evidence (pool names,
the classifier). Without `view.sizes` (a hand-built view) the prefixes alone decide.
"""
from __future__ import annotations

from egress.inspect.base import NEED_MORE, NO_MATCH, InspectResult, Status, StreamView
from egress.types import Detection

INITIATOR_LEN = 64
RESPONDER_LEN = 234
CONFIDENCE = 0.6


def looks_random(data: bytes) -> bool:
    """Cheap randomness test for a key/ciphertext: varied bytes, not text, no long runs."""
    if not data:
        return False
    distinct = len(set(data))
    if distinct < min(len(data), 256) // 3:
        return False
    printable = sum(1 for b in data if 0x20 <= b < 0x7F)
    if printable > 0.8 * len(data):
        return False
    run = best = 1
    for a, b in zip(data, data[1:]):
        run = run + 1 if a == b else 1
        best = max(best, run)
    return best <= 6


class StratumV2Detector:
    """Stratum v2 Noise handshake shape, any port."""
    name = "stratum_v2"
    protocols = frozenset({6})
    max_bytes = 512

    def inspect(self, view: StreamView) -> InspectResult:
        sizes = [(d, n) for _, d, n in view.sizes[:2]]
        if sizes:
            if sizes[0] != (0, INITIATOR_LEN):
                return NO_MATCH
            if len(sizes) < 2:
                return self._wait(view)
            if sizes[1] != (1, RESPONDER_LEN):
                return NO_MATCH
        else:
            # No packet sizes (a hand-built view): judge from the prefixes alone.
            if len(view.to_server) > INITIATOR_LEN or len(view.to_client) > RESPONDER_LEN:
                return NO_MATCH
            if len(view.to_server) < INITIATOR_LEN or len(view.to_client) < RESPONDER_LEN:
                return self._wait(view)
        first = view.to_server[:INITIATOR_LEN]
        reply = view.to_client[:RESPONDER_LEN]
        if len(first) < INITIATOR_LEN or len(reply) < RESPONDER_LEN:
            return self._wait(view)
        if not (looks_random(first) and looks_random(reply)):
            return NO_MATCH
        detection = Detection("mining", "stratum.v2.noise_handshake",
                               {"initiator_bytes": INITIATOR_LEN, "responder_bytes": RESPONDER_LEN,
                                "direction": "both"}, CONFIDENCE)
        return InspectResult(Status.MATCH, (detection,), "stratum-v2")

    @staticmethod
    def _wait(view: StreamView) -> InspectResult:
        if view.closed_to_server and view.closed_to_client:
            return NO_MATCH
        return NEED_MORE
