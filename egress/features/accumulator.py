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


def _fresh() -> list:
    row = [0] * _N_DIR
    for i in (SQ, IAT_S, IAT_Q, BSQ, BI_S, BI_Q, PS_Q, PI_S, PI_Q, LS_Q):
        row[i] = 0.0
    row[IAT_LAST] = row[BL] = row[PI_L] = -1.0
    return row


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
        for name in Accumulator.__slots__:
            setattr(c, name, getattr(self, name))
        c.s = (self.s[0][:], self.s[1][:])
        c.first = self.first[:]
        if c.bd >= 0:
            c._close_burst()
            c.bd = -1
        return c

    def values(self, app_proto: str | None = None, categories=()) -> list[float]:
        """The feature vector in `FEATURE_NAMES` order."""
        a = self.snapshot()
        out: list[float] = []
        put = out.append
        pkts = a.s[0][N] + a.s[1][N]
        pay = a.s[0][PB] + a.s[1][PB]
        duration = a.tl - a.t0 if a.t0 >= 0.0 else 0.0
        dur = duration if duration > 1e-3 else 1e-3

        # volume and sizes (each per-direction group: toserver then toclient)
        for d in (0, 1):
            put(a.s[d][N])
        for d in (0, 1):
            put(a.s[d][PN])
        for d in (0, 1):
            put(a.s[d][PB])
        means, cvs = [], []
        for d in (0, 1):
            m, cv = _mean_cv(a.s[d][PN], a.s[d][PB], a.s[d][SQ])
            means.append(m)
            cvs.append(cv * m)                      # the standard deviation
        out.extend(means)
        out.extend(cvs)
        for d in (0, 1):
            put(a.s[d][SMAX])
        for d in (0, 1):
            put((a.s[d][N] - a.s[d][PN]) / a.s[d][N] if a.s[d][N] else 0.0)
        put(a.s[0][N] / pkts if pkts else 0.0)
        put(a.s[0][PB] / pay if pay else 0.0)

        # who speaks first; first payload sizes
        put(1.0 if a.first and a.first[0] > 0 else 0.0)
        put(1.0 if a.first and a.first[0] < 0 else 0.0)
        out.extend(a.first)
        out.extend([0] * (FIRST_N - len(a.first)))

        # timing
        put(duration)
        put(pay / dur)
        put(pkts * 60.0 / dur)
        iat = [_mean_cv(a.s[d][IAT_N], a.s[d][IAT_S], a.s[d][IAT_Q]) for d in (0, 1)]
        put(iat[0][0])
        put(iat[1][0])
        put(iat[0][1])
        put(iat[1][1])
        put(a.idle_s / dur if duration > 0.0 else 0.0)
        put(a.idle_max)
        put(a.idle_n * 60.0 / dur)

        # bursts
        burst = [_mean_cv(a.s[d][BN], a.s[d][BSUM], a.s[d][BSQ]) for d in (0, 1)]
        interval = [_mean_cv(a.s[d][BI_N], a.s[d][BI_S], a.s[d][BI_Q]) for d in (0, 1)]
        idle_inits = a.s[0][IDLE_INIT] + a.s[1][IDLE_INIT]
        for d in (0, 1):
            put(a.s[d][BN])
        for d in (0, 1):
            put(burst[d][0])
        for d in (0, 1):
            put(burst[d][1])
        for d in (0, 1):
            put(a.s[d][BMAX])
        for d in (0, 1):
            put(interval[d][0])
        for d in (0, 1):
            put(interval[d][1])
        for d in (0, 1):
            put(a.s[d][PUSH] / a.s[d][BN] if a.s[d][BN] else 0.0)
        for d in (0, 1):
            put(a.s[d][IDLE_INIT] / idle_inits if idle_inits else 0.0)
        for d in (0, 1):
            put(a.s[d][REP] / (a.s[d][BN] - 1) if a.s[d][BN] > 1 else 0.0)
        bursts = a.s[0][BN] + a.s[1][BN]
        put(a.alt / (bursts - 1) if bursts > 1 else 0.0)
        put(a.ex_n)
        req = a.ex_req / a.ex_n if a.ex_n else 0.0
        resp = a.ex_resp / a.ex_n if a.ex_n else 0.0
        put(req)
        put(resp)
        put(resp / req if req > 0.0 else 0.0)
        put(a.ex_small / a.ex_n if a.ex_n else 0.0)
        put(a.ex_lat / a.ex_n if a.ex_n else 0.0)

        # pushes and replies
        pushes = [_mean_cv(a.s[d][PUSH], a.s[d][PS_S], a.s[d][PS_Q]) for d in (0, 1)]
        for d in (0, 1):
            put(pushes[d][0])
        for d in (0, 1):
            put(pushes[d][1])
        for d in (0, 1):
            put(a.s[d][PREP] / (a.s[d][PUSH] - 1) if a.s[d][PUSH] > 1 else 0.0)
        for d in (0, 1):
            put(_mean_cv(a.s[d][PI_N], a.s[d][PI_S], a.s[d][PI_Q])[1])
        for d in (0, 1):
            put(a.s[d][LPUSH] / a.s[d][LBN] if a.s[d][LBN] else 0.0)
        for d in (0, 1):
            put(a.s[d][MASK].bit_count())
        put(a.s[1][PUSH] / a.s[0][BN] if a.s[0][BN] else float(a.s[1][PUSH]))
        put(_mean_cv(a.ex_n, a.ex_req, a.ex_req_q)[1])
        put(_mean_cv(a.ex_n, a.ex_resp, a.ex_resp_q)[1])
        server_wait = a.ex_lat / a.ex_n if a.ex_n else 0.0
        client_wait = a.rex_lat / a.rex_n if a.rex_n else 0.0
        put(server_wait / (server_wait + client_wait) if server_wait + client_wait > 0.0 else 0.5)

        # nested shape
        for d in (0, 1):
            put(a.s[d][LATE_BIG])
        put(a.late_n)
        put((a.s[0][LATE_BIG] + a.s[1][LATE_BIG]) / a.late_n if a.late_n else 0.0)
        late = [_mean_cv(a.s[d][LBN], a.s[d][LS_S], a.s[d][LS_Q]) for d in (0, 1)]
        for d in (0, 1):
            put(late[d][0])
        for d in (0, 1):
            put(late[d][1])

        # TCP
        put(1.0 if a.proto == 6 else 0.0)
        put(1.0 if a.proto == 17 else 0.0)
        put(1.0 if a.syn else 0.0)
        put(1.0 if a.synack else 0.0)
        put(a.fin)
        put(a.rst)
        put(a.zwin)
        for d in (0, 1):
            put(a.s[d][PSH_N] / a.s[d][N] if a.s[d][N] else 0.0)
        for d in (0, 1):
            put(a.s[d][WIN0])

        out.extend(signature_values(app_proto, categories))
        assert len(out) == N_FEATURES
        return out


def signature_values(app_proto: str | None, categories) -> list[float]:
    """One-hot application protocol group, then one 0/1 per detection category."""
    group = None
    if app_proto:
        group = APP_ALIASES.get(app_proto.lower(), "other")
    vals = [1.0 if g == group else 0.0 for g in APP_GROUPS]
    cats = set(categories)
    vals.extend(1.0 if c in cats else 0.0 for c in DETECTION_CATEGORIES)
    return vals
