"""A straightforward batch recomputation of the feature vector from a list of packets.

It exists to check the incremental `Accumulator` (tests compare the two on random
packet sequences) and is written differently on purpose: it first cuts the payload
packets into bursts, then derives every statistic from those lists with numpy.
Packets are tuples (ts, direction, payload_len, tcp_flags, window).
"""
from __future__ import annotations

import numpy as np

from egress.features.accumulator import signature_values, thresholds
from egress.features.schema import (BIG_BURST, FIRST_N, LATE_BURST_INDEX, REPEAT_TOLERANCE, SIZE_BUCKET_SHIFT,
                                    SIZE_BUCKETS, SMALL_MESSAGE)

SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10


def _mean(xs) -> float:
    return float(np.mean(xs)) if len(xs) else 0.0


def _cv(xs) -> float:
    if not len(xs):
        return 0.0
    m = float(np.mean(xs))
    return float(np.std(xs)) / m if m > 0 else 0.0


def compute(packets, proto: int = 6, app_proto=None, categories=()) -> list[float]:
    pk = list(packets)
    t0 = pk[0][0] if pk else 0.0
    tl = pk[-1][0] if pk else 0.0
    duration = tl - t0
    dur = duration if duration > 1e-3 else 1e-3
    by_dir = [[p for p in pk if p[1] == d] for d in (0, 1)]
    pay_dir = [[p for p in by_dir[d] if p[2] > 0] for d in (0, 1)]
    sizes = [np.array([p[2] for p in pay_dir[d]], dtype=float) for d in (0, 1)]

    # handshake -> thresholds. Assumes the handshake precedes any payload, as in real TCP.
    gap, idle = thresholds(0.0)
    win0 = [0, 0]
    syn_i = next((i for i, p in enumerate(pk) if p[3] & SYN and not p[3] & ACK), -1)
    synack_i = next((i for i, p in enumerate(pk) if p[3] & SYN and p[3] & ACK), -1)
    for i in sorted(j for j in (syn_i, synack_i) if j >= 0):
        win0[pk[i][1]] = pk[i][4]
    if 0 <= syn_i < synack_i:
        gap, idle = thresholds(pk[synack_i][0] - pk[syn_i][0])

    bursts = []   # [dir, start, end, bytes]
    for ts, d, n, fl, w in pk:
        if n <= 0:
            continue
        if bursts and bursts[-1][0] == d and ts - bursts[-1][2] <= gap:
            bursts[-1][2] = ts
            bursts[-1][3] += n
        else:
            bursts.append([d, ts, ts, n])

    out = []
    out += [len(by_dir[0]), len(by_dir[1]), len(pay_dir[0]), len(pay_dir[1]),
            float(sizes[0].sum()), float(sizes[1].sum())]
    out += [_mean(sizes[0]), _mean(sizes[1])]
    out += [float(np.std(sizes[0])) if len(sizes[0]) else 0.0, float(np.std(sizes[1])) if len(sizes[1]) else 0.0]
    out += [float(sizes[0].max()) if len(sizes[0]) else 0, float(sizes[1].max()) if len(sizes[1]) else 0]
    for d in (0, 1):
        out.append((len(by_dir[d]) - len(pay_dir[d])) / len(by_dir[d]) if by_dir[d] else 0.0)
    out.append(len(by_dir[0]) / len(pk) if pk else 0.0)
    total = sizes[0].sum() + sizes[1].sum()
    out.append(float(sizes[0].sum() / total) if total else 0.0)

    signed = [p[2] if p[1] == 0 else -p[2] for p in pk if p[2] > 0][:FIRST_N]
    out += [1.0 if signed and signed[0] > 0 else 0.0, 1.0 if signed and signed[0] < 0 else 0.0]
    out += signed + [0] * (FIRST_N - len(signed))

    out += [duration, float(total) / dur, len(pk) * 60.0 / dur]
    iats = [np.diff([p[0] for p in pay_dir[d]]) for d in (0, 1)]
    out += [_mean(iats[0]), _mean(iats[1]), _cv(iats[0]), _cv(iats[1])]

    pauses = [(bursts[i][1] - bursts[i - 1][2], bursts[i][0]) for i in range(1, len(bursts))]
    idles = [(p, d) for p, d in pauses if p > idle]
    out += [sum(p for p, _ in idles) / dur if duration > 0 else 0.0,
            max((p for p, _ in idles), default=0.0), len(idles) * 60.0 / dur]

    bsz = [[b[3] for b in bursts if b[0] == d] for d in (0, 1)]
    bstart = [[b[1] for b in bursts if b[0] == d] for d in (0, 1)]
    intervals = [np.diff(bstart[d]) for d in (0, 1)]
    push = [sum(1 for i in range(1, len(bursts)) if bursts[i][0] == d and bursts[i - 1][0] == d) for d in (0, 1)]
    idle_init = [sum(1 for _, dd in idles if dd == d) for d in (0, 1)]
    out += [len(bsz[0]), len(bsz[1]), _mean(bsz[0]), _mean(bsz[1]), _cv(bsz[0]), _cv(bsz[1]),
            max(bsz[0], default=0), max(bsz[1], default=0),
            _mean(intervals[0]), _mean(intervals[1]), _cv(intervals[0]), _cv(intervals[1])]
    out += [push[d] / len(bsz[d]) if bsz[d] else 0.0 for d in (0, 1)]
    out += [idle_init[d] / len(idles) if idles else 0.0 for d in (0, 1)]
    repeats = [sum(1 for i in range(1, len(bsz[d])) if abs(bsz[d][i] - bsz[d][i - 1]) <= max(4.0, REPEAT_TOLERANCE * bsz[d][i]))
               for d in (0, 1)]
    out += [repeats[d] / (len(bsz[d]) - 1) if len(bsz[d]) > 1 else 0.0 for d in (0, 1)]
    alternations = sum(1 for i in range(1, len(bursts)) if bursts[i][0] != bursts[i - 1][0])
    out.append(alternations / (len(bursts) - 1) if len(bursts) > 1 else 0.0)
    ex = [(bursts[i - 1][3], bursts[i][3], bursts[i][1] - bursts[i - 1][2])
          for i in range(1, len(bursts)) if bursts[i][0] == 1 and bursts[i - 1][0] == 0]
    req = _mean([e[0] for e in ex])
    resp = _mean([e[1] for e in ex])
    out += [len(ex), req, resp, resp / req if req > 0 else 0.0,
            sum(1 for e in ex if e[0] < SMALL_MESSAGE and e[1] < SMALL_MESSAGE) / len(ex) if ex else 0.0,
            _mean([e[2] for e in ex])]

    pushed = [[bursts[i] for i in range(1, len(bursts)) if bursts[i][0] == d and bursts[i - 1][0] == d]
              for d in (0, 1)]
    out += [_mean([b[3] for b in pushed[d]]) for d in (0, 1)]
    out += [_cv([b[3] for b in pushed[d]]) for d in (0, 1)]
    psz = [[b[3] for b in pushed[d]] for d in (0, 1)]
    out += [sum(1 for i in range(1, len(psz[d])) if abs(psz[d][i] - psz[d][i - 1]) <= max(4.0, REPEAT_TOLERANCE * psz[d][i]))
            / (len(psz[d]) - 1) if len(psz[d]) > 1 else 0.0 for d in (0, 1)]
    out += [_cv(np.diff([b[1] for b in pushed[d]])) for d in (0, 1)]
    late_dir = [[i for i in range(LATE_BURST_INDEX, len(bursts)) if bursts[i][0] == d] for d in (0, 1)]
    out += [sum(1 for i in late_dir[d] if bursts[i - 1][0] == d) / len(late_dir[d]) if late_dir[d] else 0.0
            for d in (0, 1)]
    out += [len({min(b >> SIZE_BUCKET_SHIFT, SIZE_BUCKETS - 1) for b in bsz[d]}) for d in (0, 1)]
    out.append(len(pushed[1]) / len(bsz[0]) if bsz[0] else len(pushed[1]))
    out += [_cv([e[0] for e in ex]), _cv([e[1] for e in ex])]
    client_answers = [bursts[i][1] - bursts[i - 1][2] for i in range(1, len(bursts))
                      if bursts[i][0] == 0 and bursts[i - 1][0] == 1]
    sw, cw = _mean([e[2] for e in ex]), _mean(client_answers)
    out.append(sw / (sw + cw) if sw + cw > 0 else 0.5)

    late = bursts[LATE_BURST_INDEX:]
    late_big = [sum(1 for b in late if b[0] == d and b[3] >= BIG_BURST) for d in (0, 1)]
    out += [late_big[0], late_big[1], len(late), sum(late_big) / len(late) if late else 0.0]
    late_sizes = [[b[3] for b in late if b[0] == d] for d in (0, 1)]
    out += [_mean(late_sizes[0]), _mean(late_sizes[1]), _cv(late_sizes[0]), _cv(late_sizes[1])]

    out += [1.0 if proto == 6 else 0.0, 1.0 if proto == 17 else 0.0, 1.0 if syn_i >= 0 else 0.0,
            1.0 if synack_i >= 0 else 0.0, sum(1 for p in pk if p[3] & FIN), sum(1 for p in pk if p[3] & RST),
            sum(1 for p in pk if p[3] and not p[3] & RST and not p[4])]
    out += [sum(1 for p in by_dir[d] if p[3] & PSH) / len(by_dir[d]) if by_dir[d] else 0.0 for d in (0, 1)]
    out += win0
    out += signature_values(app_proto, categories)
    return [float(v) for v in out]
