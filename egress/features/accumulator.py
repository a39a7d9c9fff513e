"""Incremental per-flow feature state, updated once per packet at a cost of a few slots.

Guarantees:
- `Accumulator.add(ts, direction, payload_len, tcp_flags, window)` does O(1) work (about
  0.4 us) and allocates no container beyond the first `FIRST_N` payload sizes; everything
  expensive (means, deviations, ratios, the open burst) is computed only by `values()`,
  at checkpoints. A flow's state is about 2.4 KB (one counter list per direction).
- `values()` does not change the state: scoring at packet 8 and again at packet 32
  gives exactly what a fresh accumulator fed the same 32 packets would give.
- The result equals the batch reference in `egress.features.batch` (a test checks it).

A *burst* is a run of payload packets in one direction with no pause longer than
`gap` (about two round trips): the unit in which request/response protocols speak.
A pause longer than `idle` between bursts is an *idle period*; who breaks the silence
(client or server) is what separates a client-driven protocol (HTTPS, interactive SSH)
from a server-driven one (mining job pushes, the far end of a reverse tunnel).
A burst that follows the other side's burst is a *reply*; one that follows its own
side's previous burst is a *push* (nobody asked): the sizes and spacing of pushes and
replies are kept apart, because a pool's job pushes and share acks keep one size while
an event feed's pushes do not, and a telemetry upload gets replies but no pushes at all.
"""
from __future__ import annotations

import math

from egress.features.schema import (APP_ALIASES, APP_GROUPS, BIG_BURST, DETECTION_CATEGORIES, FIRST_N,
                                    LATE_BURST_INDEX, N_FEATURES, REPEAT_TOLERANCE, SIZE_BUCKET_SHIFT,
                                    SIZE_BUCKETS, SMALL_MESSAGE)

SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10

MIN_GAP = 0.03      # seconds: a pause shorter than this never splits a burst
MIN_IDLE = 0.25     # seconds: a pause shorter than this is never an idle period


# Indexes into each direction's counter list (Accumulator.s[d]): one list per direction
# instead of three dozen two-element lists keeps a tracked flow's state small.
N = 0
PN = 1
PB = 2
SQ = 3
SMAX = 4
IAT_LAST = 5
IAT_N = 6
IAT_S = 7
IAT_Q = 8
PSH_N = 9
WIN0 = 10
BN = 11
BSUM = 12
BSQ = 13
BMAX = 14
BL = 15
BI_N = 16
BI_S = 17
BI_Q = 18
PUSH = 19
IDLE_INIT = 20
LATE_BIG = 21
LB = 22
REP = 23
PS_S = 24       # pushes (a burst after the same side's previous burst): sizes ...
PS_Q = 25
PI_L = 26       # ... and the intervals between their starts
PI_N = 27
PI_S = 28
PI_Q = 29
MASK = 30       # bit i: some burst fell in size bucket i
LBN = 31        # bursts past LATE_BURST_INDEX, and how many of them were pushes
LPUSH = 32
PLB = 33        # the previous push's size, and how many pushes repeated the one before
PREP = 34
LS_S = 35       # sizes of the bursts past LATE_BURST_INDEX (their count is LBN)
LS_Q = 36
_N_DIR = 37
_LAST_BUCKET = SIZE_BUCKETS - 1


def _fresh_row() -> list:
    row = [0] * _N_DIR
    for i in (SQ, IAT_S, IAT_Q, BSQ, BI_S, BI_Q, PS_Q, PI_S, PI_Q, LS_Q):
        row[i] = 0.0
    row[IAT_LAST] = row[BL] = row[PI_L] = -1.0
    return row


_FRESH = tuple(_fresh_row())


def _fresh() -> list:
    return list(_FRESH)             # a copy of the template: one C call per flow direction


def thresholds(rtt: float) -> tuple[float, float]:
    """(burst gap, idle gap) for a flow whose handshake round trip took `rtt` seconds."""
    return max(MIN_GAP, 2.0 * rtt), max(MIN_IDLE, 10.0 * rtt)


def _mean_cv(n: int, s: float, q: float) -> tuple[float, float]:
    if n <= 0:
        return 0.0, 0.0
    mean = s / n
    var = q / n - mean * mean
    std = math.sqrt(var) if var > 0.0 else 0.0
    return mean, (std / mean if mean > 0.0 else 0.0)


class Accumulator:
    __slots__ = (
        "proto", "t0", "tl", "s", "first",
        "syn", "synack", "fin", "rst", "zwin", "t_syn", "gap", "idle",
        # the open burst
        "bd", "bs", "be", "bb",
        # closed bursts
        "k", "pd", "pe", "pbb", "idle_n", "idle_s", "idle_max",
        "alt", "ex_n", "ex_req", "ex_resp", "ex_small", "ex_lat", "late_n", "ex_req_q", "ex_resp_q",
        "rex_n", "rex_lat",
        # scratch for the classifier (next scoring time); not a feature
        "due",
    )

    def __init__(self, proto: int = 6):
        self.proto = proto
        self.t0 = -1.0
        self.tl = 0.0
        # per-direction counters: s[0] toward the server, s[1] toward the client (see the indexes above)
        self.s = (_fresh(), _fresh())
        self.first: list[int] = []
        self.syn = 0
        self.synack = 0
        self.fin = 0
        self.rst = 0
        self.zwin = 0
        self.t_syn = -1.0
        self.gap, self.idle = thresholds(0.0)
        self.bd = -1
        self.bs = self.be = 0.0
        self.bb = 0
        self.k = 0
        self.pd = -1
        self.pe = 0.0
        self.pbb = 0
        self.idle_n = 0
        self.idle_s = 0.0
        self.idle_max = 0.0
        self.alt = 0
        self.ex_n = 0
        self.ex_req = 0
        self.ex_resp = 0
        self.ex_small = 0
        self.ex_lat = 0.0
        self.late_n = 0
        self.ex_req_q = 0.0
        self.ex_resp_q = 0.0
        self.rex_n = 0
        self.rex_lat = 0.0
        self.due = 0.0

    # -- per packet ---------------------------------------------------------------------

    def add(self, ts: float, d: int, plen: int, flags: int = 0, win: int = 0) -> None:
        st = self.s[d]
        if self.t0 < 0.0:
            self.t0 = ts
        st[N] += 1
        self.tl = ts
        if flags:
            if flags & 0x07 or not win:
                self._tcp_rare(ts, d, flags, win)
            if flags & PSH:
                st[PSH_N] += 1
        if plen <= 0:
            return
        st[PN] += 1
        st[PB] += plen
        st[SQ] += plen * plen
        if plen > st[SMAX]:
            st[SMAX] = plen
        if len(self.first) < FIRST_N:
            self.first.append(plen if d == 0 else -plen)
        last = st[IAT_LAST]
        if last >= 0.0:
            dt = ts - last
            st[IAT_N] += 1
            st[IAT_S] += dt
            st[IAT_Q] += dt * dt
        st[IAT_LAST] = ts
        if d == self.bd and ts - self.be <= self.gap:
            self.be = ts
            self.bb += plen
        else:
            if self.bd >= 0:
                self._close_burst()
            self.bd = d
            self.bs = self.be = ts
            self.bb = plen

    def _tcp_rare(self, ts: float, d: int, flags: int, win: int) -> None:
        if flags & SYN:
            if flags & ACK:
                if not self.synack:
                    self.s[d][WIN0] = win
                    if self.t_syn >= 0.0:
                        self.gap, self.idle = thresholds(ts - self.t_syn)
                self.synack += 1
            else:
                if not self.syn:
                    self.s[d][WIN0] = win
                    self.t_syn = ts
                self.syn += 1
        if flags & FIN:
            self.fin += 1
        if flags & RST:
            self.rst += 1
        elif not win:
            self.zwin += 1

    def _close_burst(self) -> None:
        d, b, s = self.bd, self.bb, self.bs
        st = self.s[d]
        st[BN] += 1
        st[BSUM] += b
        st[BSQ] += b * b
        if b > st[BMAX]:
            st[BMAX] = b
        prev = st[LB]
        if prev and abs(b - prev) <= max(4.0, REPEAT_TOLERANCE * b):
            st[REP] += 1
        st[LB] = b
        last = st[BL]
        if last >= 0.0:
            iv = s - last
            st[BI_N] += 1
            st[BI_S] += iv
            st[BI_Q] += iv * iv
        st[BL] = s
        bucket = b >> SIZE_BUCKET_SHIFT
        st[MASK] |= 1 << (bucket if bucket < _LAST_BUCKET else _LAST_BUCKET)
        pd = self.pd
        if pd >= 0:
            pause = s - self.pe
            if pause > self.idle:
                self.idle_n += 1
                self.idle_s += pause
                if pause > self.idle_max:
                    self.idle_max = pause
                self.s[d][IDLE_INIT] += 1
            if pd == d:
                st[PUSH] += 1
                if self.k >= LATE_BURST_INDEX:
                    st[LPUSH] += 1
                st[PS_S] += b
                st[PS_Q] += b * b
                prev = st[PLB]
                if prev and abs(b - prev) <= max(4.0, REPEAT_TOLERANCE * b):
                    st[PREP] += 1
                st[PLB] = b
                last = st[PI_L]
                if last >= 0.0:
                    iv = s - last
                    st[PI_N] += 1
                    st[PI_S] += iv
                    st[PI_Q] += iv * iv
                st[PI_L] = s
            else:
                self.alt += 1
                if d == 1:
                    req = self.pbb
                    self.ex_n += 1
                    self.ex_req += req
                    self.ex_resp += b
                    self.ex_lat += pause
                    self.ex_req_q += req * req
                    self.ex_resp_q += b * b
                    if req < SMALL_MESSAGE and b < SMALL_MESSAGE:
                        self.ex_small += 1
                else:
                    self.rex_n += 1
                    self.rex_lat += pause
        if self.k >= LATE_BURST_INDEX:
            self.late_n += 1
            st[LBN] += 1
            st[LS_S] += b
            st[LS_Q] += b * b
            if b >= BIG_BURST:
                self.s[d][LATE_BIG] += 1
        self.k += 1
        self.pd = d
        self.pe = self.be
        self.pbb = b

    # -- at checkpoints -------------------------------------------------------------------

    def packets(self) -> int:
        return self.s[0][N] + self.s[1][N]

    def payload_packets(self) -> int:
        return self.s[0][PN] + self.s[1][PN]

    def snapshot(self) -> "Accumulator":
        """A copy with the open burst closed (the state is left as it is)."""
        c = Accumulator.__new__(Accumulator)
        # Straight-line copies (a getattr/setattr loop over __slots__ costs five times
        # more); a test checks that every slot is copied.
        c.proto, c.t0, c.tl, c.s, c.first = self.proto, self.t0, self.tl, (self.s[0][:], self.s[1][:]), self.first[:]
        c.syn, c.synack, c.fin, c.rst, c.zwin = self.syn, self.synack, self.fin, self.rst, self.zwin
        c.t_syn, c.gap, c.idle = self.t_syn, self.gap, self.idle
        c.bd, c.bs, c.be, c.bb = self.bd, self.bs, self.be, self.bb
        c.k, c.pd, c.pe, c.pbb = self.k, self.pd, self.pe, self.pbb
        c.idle_n, c.idle_s, c.idle_max, c.alt = self.idle_n, self.idle_s, self.idle_max, self.alt
        c.ex_n, c.ex_req, c.ex_resp, c.ex_small, c.ex_lat = self.ex_n, self.ex_req, self.ex_resp, self.ex_small, self.ex_lat
        c.late_n, c.ex_req_q, c.ex_resp_q = self.late_n, self.ex_req_q, self.ex_resp_q
        c.rex_n, c.rex_lat, c.due = self.rex_n, self.rex_lat, self.due
        if c.bd >= 0:
            c._close_burst()
            c.bd = -1
        return c

    def values(self, app_proto: str | None = None, categories=()) -> list[float]:
        """The feature vector in `FEATURE_NAMES` order.

        Written as a few list displays over local names (it runs at every checkpoint);
        each feature is the same arithmetic, in the same order, as the schema-3 code the
        default model was trained with (a test compares the two bit for bit)."""
        a = self.snapshot() if self.bd >= 0 else self
        s0, s1 = a.s
        mean_cv = _mean_cv
        n0, n1 = s0[N], s1[N]
        pn0, pn1 = s0[PN], s1[PN]
        pb0, pb1 = s0[PB], s1[PB]
        pkts = n0 + n1
        pay = pb0 + pb1
        duration = a.tl - a.t0 if a.t0 >= 0.0 else 0.0
        dur = duration if duration > 1e-3 else 1e-3
        m0, cv0 = mean_cv(pn0, pb0, s0[SQ])
        m1, cv1 = mean_cv(pn1, pb1, s1[SQ])
        first = a.first

        # volume and sizes (each per-direction group: toserver then toclient); who speaks
        # first; the first payload sizes
        out = [n0, n1, pn0, pn1, pb0, pb1, m0, m1, cv0 * m0, cv1 * m1,      # cv * mean: the deviation
               s0[SMAX], s1[SMAX],
               (n0 - pn0) / n0 if n0 else 0.0, (n1 - pn1) / n1 if n1 else 0.0,
               n0 / pkts if pkts else 0.0, pb0 / pay if pay else 0.0,
               1.0 if first and first[0] > 0 else 0.0, 1.0 if first and first[0] < 0 else 0.0]
        out += first
        if len(first) < FIRST_N:
            out += [0] * (FIRST_N - len(first))

        # timing
        iat0, iat1 = mean_cv(s0[IAT_N], s0[IAT_S], s0[IAT_Q]), mean_cv(s1[IAT_N], s1[IAT_S], s1[IAT_Q])
        out += (duration, pay / dur, pkts * 60.0 / dur, iat0[0], iat1[0], iat0[1], iat1[1],
                a.idle_s / dur if duration > 0.0 else 0.0, a.idle_max, a.idle_n * 60.0 / dur)

        # bursts
        bn0, bn1 = s0[BN], s1[BN]
        b0, b1 = mean_cv(bn0, s0[BSUM], s0[BSQ]), mean_cv(bn1, s1[BSUM], s1[BSQ])
        i0, i1 = mean_cv(s0[BI_N], s0[BI_S], s0[BI_Q]), mean_cv(s1[BI_N], s1[BI_S], s1[BI_Q])
        ii0, ii1 = s0[IDLE_INIT], s1[IDLE_INIT]
        idle_inits = ii0 + ii1
        push0, push1 = s0[PUSH], s1[PUSH]
        bursts = bn0 + bn1
        ex_n = a.ex_n
        req = a.ex_req / ex_n if ex_n else 0.0
        resp = a.ex_resp / ex_n if ex_n else 0.0
        out += (bn0, bn1, b0[0], b1[0], b0[1], b1[1], s0[BMAX], s1[BMAX], i0[0], i1[0], i0[1], i1[1],
                push0 / bn0 if bn0 else 0.0, push1 / bn1 if bn1 else 0.0,
                ii0 / idle_inits if idle_inits else 0.0, ii1 / idle_inits if idle_inits else 0.0,
                s0[REP] / (bn0 - 1) if bn0 > 1 else 0.0, s1[REP] / (bn1 - 1) if bn1 > 1 else 0.0,
                a.alt / (bursts - 1) if bursts > 1 else 0.0,
                ex_n, req, resp, resp / req if req > 0.0 else 0.0,
                a.ex_small / ex_n if ex_n else 0.0, a.ex_lat / ex_n if ex_n else 0.0)

        # pushes and replies
        p0, p1 = mean_cv(push0, s0[PS_S], s0[PS_Q]), mean_cv(push1, s1[PS_S], s1[PS_Q])
        lbn0, lbn1 = s0[LBN], s1[LBN]
        server_wait = a.ex_lat / ex_n if ex_n else 0.0
        client_wait = a.rex_lat / a.rex_n if a.rex_n else 0.0
        out += (p0[0], p1[0], p0[1], p1[1],
                s0[PREP] / (push0 - 1) if push0 > 1 else 0.0, s1[PREP] / (push1 - 1) if push1 > 1 else 0.0,
                mean_cv(s0[PI_N], s0[PI_S], s0[PI_Q])[1], mean_cv(s1[PI_N], s1[PI_S], s1[PI_Q])[1],
                s0[LPUSH] / lbn0 if lbn0 else 0.0, s1[LPUSH] / lbn1 if lbn1 else 0.0,
                s0[MASK].bit_count(), s1[MASK].bit_count(),
                push1 / bn0 if bn0 else float(push1),
                mean_cv(ex_n, a.ex_req, a.ex_req_q)[1], mean_cv(ex_n, a.ex_resp, a.ex_resp_q)[1],
                server_wait / (server_wait + client_wait) if server_wait + client_wait > 0.0 else 0.5)

        # nested shape
        lb0, lb1 = s0[LATE_BIG], s1[LATE_BIG]
        late_n = a.late_n
        l0, l1 = mean_cv(lbn0, s0[LS_S], s0[LS_Q]), mean_cv(lbn1, s1[LS_S], s1[LS_Q])
        out += (lb0, lb1, late_n, (lb0 + lb1) / late_n if late_n else 0.0, l0[0], l1[0], l0[1], l1[1])

        # TCP
        out += (1.0 if a.proto == 6 else 0.0, 1.0 if a.proto == 17 else 0.0,
                1.0 if a.syn else 0.0, 1.0 if a.synack else 0.0, a.fin, a.rst, a.zwin,
                s0[PSH_N] / n0 if n0 else 0.0, s1[PSH_N] / n1 if n1 else 0.0, s0[WIN0], s1[WIN0])

        out += signature_values(app_proto, categories)
        assert len(out) == N_FEATURES
        return out


_APP_ONE_HOT: dict = {}     # app_proto -> its one-hot group values (a few dozen names at most)
_NO_CATEGORIES = (0.0,) * len(DETECTION_CATEGORIES)


def signature_values(app_proto: str | None, categories) -> list[float]:
    """One-hot application protocol group, then one 0/1 per detection category."""
    one_hot = _APP_ONE_HOT.get(app_proto)
    if one_hot is None:
        group = None
        if app_proto:
            group = APP_ALIASES.get(app_proto.lower(), "other")
        one_hot = tuple(1.0 if g == group else 0.0 for g in APP_GROUPS)
        if len(_APP_ONE_HOT) < 4096:
            _APP_ONE_HOT[app_proto] = one_hot
    if not categories:
        return [*one_hot, *_NO_CATEGORIES]
    cats = set(categories)
    return [*one_hot, *(1.0 if c in cats else 0.0 for c in DETECTION_CATEGORIES)]
