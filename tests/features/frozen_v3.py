"""The feature vector code of schema 3 exactly as it was when models/default was trained
(egress/features/accumulator.py at commit 90c8a48), frozen here so that tests can check
the faster `Accumulator.values()` gives the same floats bit for bit."""
import math  # noqa: F401

from egress.features.accumulator import *  # noqa: F401,F403
from egress.features.accumulator import Accumulator, _mean_cv, signature_values  # noqa: F401
from egress.features.schema import APP_ALIASES, APP_GROUPS, DETECTION_CATEGORIES, FIRST_N, N_FEATURES


def snapshot_reference(self):
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

def values_reference(self, app_proto=None, categories=()):
    """The feature vector in `FEATURE_NAMES` order."""
    a = snapshot_reference(self)
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

    out.extend(signature_values_reference(app_proto, categories))
    assert len(out) == N_FEATURES
    return out


def signature_values_reference(app_proto, categories):
    """One-hot application protocol group, then one 0/1 per detection category."""
    group = None
    if app_proto:
        group = APP_ALIASES.get(app_proto.lower(), "other")
    vals = [1.0 if g == group else 0.0 for g in APP_GROUPS]
    cats = set(categories)
    vals.extend(1.0 if c in cats else 0.0 for c in DETECTION_CATEGORIES)
    return vals
