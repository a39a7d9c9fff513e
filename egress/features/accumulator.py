"""Incremental per-flow feature state, updated once per packet at a cost of a few slots.

Guarantees:
- `Accumulator.add(ts, direction, payload_len, tcp_flags, window)` does O(1) work with
  no allocation beyond the first `FIRST_N` payload sizes; everything expensive (means,
  deviations, ratios, the open burst) is computed only by `values()`, at checkpoints.
- `values()` does not change the state: scoring at packet 8 and again at packet 32
  gives exactly what a fresh accumulator fed the same 32 packets would give.
- The result equals the batch reference in `egress.features.batch` (a test checks it).

A *burst* is a run of payload packets in one direction with no pause longer than
`gap` (about two round trips): the unit in which request/response protocols speak.
A pause longer than `idle` between bursts is an *idle period*; who breaks the silence
(client or server) is what separates a client-driven protocol (HTTPS, interactive SSH)
from a server-driven one (mining job pushes, the far end of a reverse tunnel).
"""
from __future__ import annotations

import math

from egress.features.schema import (APP_ALIASES, APP_GROUPS, BIG_BURST, DETECTION_CATEGORIES, FIRST_N,
                                    LATE_BURST_INDEX, N_FEATURES, REPEAT_TOLERANCE, SMALL_MESSAGE)

SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10

MIN_GAP = 0.03      # seconds: a pause shorter than this never splits a burst
MIN_IDLE = 0.25     # seconds: a pause shorter than this is never an idle period


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
        "proto", "t0", "tl", "n", "pn", "pb", "sq", "smax", "first",
        "iat_last", "iat_n", "iat_s", "iat_q",
        "psh", "syn", "synack", "fin", "rst", "zwin", "win0", "t_syn", "gap", "idle",
        # the open burst
        "bd", "bs", "be", "bb",
        # closed bursts
        "k", "bn", "bsum", "bsq", "bmax", "bl", "bi_n", "bi_s", "bi_q",
        "pd", "pe", "pbb", "push", "idle_init", "idle_n", "idle_s", "idle_max",
        "alt", "ex_n", "ex_req", "ex_resp", "ex_small", "ex_lat", "late_n", "late_big", "lb", "rep",
        # scratch for the classifier (next scoring time); not a feature
        "due",
    )

    def __init__(self, proto: int = 6):
        self.proto = proto
        self.t0 = -1.0
        self.tl = 0.0
        self.n = [0, 0]          # packets per direction
        self.pn = [0, 0]         # payload packets
        self.pb = [0, 0]         # payload bytes
        self.sq = [0.0, 0.0]     # sum of squared payload sizes
        self.smax = [0, 0]
        self.first: list[int] = []
        self.iat_last = [-1.0, -1.0]
        self.iat_n = [0, 0]
        self.iat_s = [0.0, 0.0]
        self.iat_q = [0.0, 0.0]
        self.psh = [0, 0]
        self.syn = 0
        self.synack = 0
        self.fin = 0
        self.rst = 0
        self.zwin = 0
        self.win0 = [0, 0]
        self.t_syn = -1.0
        self.gap, self.idle = thresholds(0.0)
        self.bd = -1
        self.bs = self.be = 0.0
        self.bb = 0
        self.k = 0
        self.bn = [0, 0]
        self.bsum = [0, 0]
        self.bsq = [0.0, 0.0]
        self.bmax = [0, 0]
        self.bl = [-1.0, -1.0]
        self.bi_n = [0, 0]
        self.bi_s = [0.0, 0.0]
        self.bi_q = [0.0, 0.0]
        self.pd = -1
        self.pe = 0.0
        self.pbb = 0
        self.push = [0, 0]
        self.idle_init = [0, 0]
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
        self.late_big = [0, 0]
        self.lb = [0, 0]         # size of the previous burst each way
        self.rep = [0, 0]        # bursts that repeat the previous one's size (fixed-size messages)
        self.due = 0.0

    # -- per packet ---------------------------------------------------------------------

    def add(self, ts: float, d: int, plen: int, flags: int = 0, win: int = 0) -> None:
        n = self.n
        if self.t0 < 0.0:
            self.t0 = ts
        n[d] += 1
        self.tl = ts
        if flags:
            if flags & 0x07 or not win:
                self._tcp_rare(ts, d, flags, win)
            if flags & PSH:
                self.psh[d] += 1
        if plen <= 0:
            return
        self.pn[d] += 1
        self.pb[d] += plen
        self.sq[d] += plen * plen
        if plen > self.smax[d]:
            self.smax[d] = plen
        if len(self.first) < FIRST_N:
            self.first.append(plen if d == 0 else -plen)
        last = self.iat_last[d]
        if last >= 0.0:
            dt = ts - last
            self.iat_n[d] += 1
            self.iat_s[d] += dt
            self.iat_q[d] += dt * dt
        self.iat_last[d] = ts
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
                    self.win0[d] = win
                    if self.t_syn >= 0.0:
                        self.gap, self.idle = thresholds(ts - self.t_syn)
                self.synack += 1
            else:
                if not self.syn:
                    self.win0[d] = win
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
        self.bn[d] += 1
        self.bsum[d] += b
        self.bsq[d] += b * b
        if b > self.bmax[d]:
            self.bmax[d] = b
        prev = self.lb[d]
        if prev and abs(b - prev) <= max(4.0, REPEAT_TOLERANCE * b):
            self.rep[d] += 1
        self.lb[d] = b
        last = self.bl[d]
        if last >= 0.0:
            iv = s - last
            self.bi_n[d] += 1
            self.bi_s[d] += iv
            self.bi_q[d] += iv * iv
        self.bl[d] = s
        pd = self.pd
        if pd >= 0:
            pause = s - self.pe
            if pause > self.idle:
                self.idle_n += 1
                self.idle_s += pause
                if pause > self.idle_max:
                    self.idle_max = pause
                self.idle_init[d] += 1
            if pd == d:
                self.push[d] += 1
            else:
                self.alt += 1
                if d == 1:
                    req = self.pbb
                    self.ex_n += 1
                    self.ex_req += req
                    self.ex_resp += b
                    self.ex_lat += pause
                    if req < SMALL_MESSAGE and b < SMALL_MESSAGE:
                        self.ex_small += 1
        if self.k >= LATE_BURST_INDEX:
            self.late_n += 1
            if b >= BIG_BURST:
                self.late_big[d] += 1
        self.k += 1
        self.pd = d
        self.pe = self.be
        self.pbb = b

    # -- at checkpoints -------------------------------------------------------------------

    def snapshot(self) -> "Accumulator":
        """A copy with the open burst closed (the state is left as it is)."""
        c = Accumulator.__new__(Accumulator)
        for name in Accumulator.__slots__:
            v = getattr(self, name)
            setattr(c, name, v[:] if type(v) is list else v)
        if c.bd >= 0:
            c._close_burst()
            c.bd = -1
        return c

    def values(self, app_proto: str | None = None, categories=()) -> list[float]:
        """The feature vector in `FEATURE_NAMES` order."""
        a = self.snapshot()
        out: list[float] = []
        put = out.append
        pkts = a.n[0] + a.n[1]
        pay = a.pb[0] + a.pb[1]
        duration = a.tl - a.t0 if a.t0 >= 0.0 else 0.0
        dur = duration if duration > 1e-3 else 1e-3

        # volume and sizes (each per-direction group: toserver then toclient)
        for d in (0, 1):
            put(a.n[d])
        for d in (0, 1):
            put(a.pn[d])
        for d in (0, 1):
            put(a.pb[d])
        means, cvs = [], []
        for d in (0, 1):
            m, cv = _mean_cv(a.pn[d], a.pb[d], a.sq[d])
            means.append(m)
            cvs.append(cv * m)                      # the standard deviation
        out.extend(means)
        out.extend(cvs)
        for d in (0, 1):
            put(a.smax[d])
        for d in (0, 1):
            put((a.n[d] - a.pn[d]) / a.n[d] if a.n[d] else 0.0)
        put(a.n[0] / pkts if pkts else 0.0)
        put(a.pb[0] / pay if pay else 0.0)

        # who speaks first; first payload sizes
        put(1.0 if a.first and a.first[0] > 0 else 0.0)
        put(1.0 if a.first and a.first[0] < 0 else 0.0)
        out.extend(a.first)
        out.extend([0] * (FIRST_N - len(a.first)))

        # timing
        put(duration)
        put(pay / dur)
        put(pkts * 60.0 / dur)
        iat = [_mean_cv(a.iat_n[d], a.iat_s[d], a.iat_q[d]) for d in (0, 1)]
        put(iat[0][0])
        put(iat[1][0])
        put(iat[0][1])
        put(iat[1][1])
        put(a.idle_s / dur if duration > 0.0 else 0.0)
        put(a.idle_max)
        put(a.idle_n * 60.0 / dur)

        # bursts
        burst = [_mean_cv(a.bn[d], a.bsum[d], a.bsq[d]) for d in (0, 1)]
        interval = [_mean_cv(a.bi_n[d], a.bi_s[d], a.bi_q[d]) for d in (0, 1)]
        idle_inits = a.idle_init[0] + a.idle_init[1]
        for d in (0, 1):
            put(a.bn[d])
        for d in (0, 1):
            put(burst[d][0])
        for d in (0, 1):
            put(burst[d][1])
        for d in (0, 1):
            put(a.bmax[d])
        for d in (0, 1):
            put(interval[d][0])
        for d in (0, 1):
            put(interval[d][1])
        for d in (0, 1):
            put(a.push[d] / a.bn[d] if a.bn[d] else 0.0)
        for d in (0, 1):
            put(a.idle_init[d] / idle_inits if idle_inits else 0.0)
        for d in (0, 1):
            put(a.rep[d] / (a.bn[d] - 1) if a.bn[d] > 1 else 0.0)
        bursts = a.bn[0] + a.bn[1]
        put(a.alt / (bursts - 1) if bursts > 1 else 0.0)
        put(a.ex_n)
        req = a.ex_req / a.ex_n if a.ex_n else 0.0
        resp = a.ex_resp / a.ex_n if a.ex_n else 0.0
        put(req)
        put(resp)
        put(resp / req if req > 0.0 else 0.0)
        put(a.ex_small / a.ex_n if a.ex_n else 0.0)
        put(a.ex_lat / a.ex_n if a.ex_n else 0.0)

        # nested shape
        for d in (0, 1):
            put(a.late_big[d])
        put(a.late_n)
        put((a.late_big[0] + a.late_big[1]) / a.late_n if a.late_n else 0.0)

        # TCP
        put(1.0 if a.proto == 6 else 0.0)
        put(1.0 if a.proto == 17 else 0.0)
        put(1.0 if a.syn else 0.0)
        put(1.0 if a.synack else 0.0)
        put(a.fin)
        put(a.rst)
        put(a.zwin)
        for d in (0, 1):
            put(a.psh[d] / a.n[d] if a.n[d] else 0.0)
        for d in (0, 1):
            put(a.win0[d])

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
