"""The versioned, ordered feature schema: the one list both serving and training use.

Guarantees:
- `FEATURE_NAMES` is the order of every feature vector this code produces; a model
  bundle records the names and `SCHEMA_VERSION` it was trained with, and loading a
  bundle whose names or version differ is an error (egress.classify.bundle).
- Bump `SCHEMA_VERSION` whenever a name, its order, or its meaning changes.
- No feature is a port number (or any function of a port alone): the classifier must
  find Stratum on :443 and SSH on :80 just as well.
- Detector-derived features (`app_*`, `det_*`) are zero when signatures are off, so a
  model has to be (and is trained to be) useful without them.
"""
from __future__ import annotations

# 4: features are computed without pure ACKs (egress.engine.is_pure_ack), which the
#    engine no longer tracks and the live gateway no longer queues: packet counts,
#    ack_only_frac_* (now FIN/SYN/RST-only and zero-window packets), duration.
SCHEMA_VERSION = 4

# How many leading payload packets are kept as signed sizes (+ to server, - to client).
FIRST_N = 16

# Burst index after which a burst counts as "late" (past the handshake of TLS/SSH):
# big late bursts both ways are the shape of a protocol nested inside another.
LATE_BURST_INDEX = 10
BIG_BURST = 1000          # bytes: a burst at least this large is "big"
REPEAT_TOLERANCE = 0.03   # a burst within 3% (at least 4 bytes) of the previous one that way "repeats"
SMALL_MESSAGE = 600       # bytes: both sides of a "small symmetric exchange" stay under this
SIZE_BUCKET_SHIFT = 4     # message sizes fall in 16-byte buckets (the last one open-ended):
SIZE_BUCKETS = 64         # "size_buckets" counts the distinct buckets a side's messages used

# Application protocols (as detectors name them) folded into a few one-hot groups.
APP_GROUPS = ("tls", "ssh", "http", "dns", "mining", "websocket", "other")
APP_ALIASES = {
    "tls": "tls", "ssl": "tls", "quic": "tls",
    "ssh": "ssh",
    "http": "http", "http2": "http",
    "dns": "dns",
    "stratum": "mining", "stratum2": "mining", "stratum_v2": "mining", "xmr": "mining",
    "ethproxy": "mining", "eth-proxy": "mining", "ethminer": "mining", "getwork": "mining",
    "mining": "mining",
    "websocket": "websocket", "ws": "websocket",
}
DETECTION_CATEGORIES = ("mining", "ssh", "reverse_tunnel", "reverse_shell", "tunnel", "scan", "metadata")


def _per_dir(*names: str) -> list[str]:
    return [n + suffix for n in names for suffix in ("_toserver", "_toclient")]


FEATURE_NAMES: tuple[str, ...] = tuple(
    # volume and sizes
    _per_dir("pkts", "payload_pkts", "bytes", "size_mean", "size_std", "size_max", "ack_only_frac")
    + ["pkt_ratio_toserver", "byte_ratio_toserver"]
    # who speaks first, and the first payload sizes signed by direction
    + ["client_first", "server_first"]
    + ["first_size_%02d" % i for i in range(FIRST_N)]
    # timing
    + ["duration", "bytes_per_sec", "pkts_per_min"]
    + _per_dir("iat_mean", "iat_cv")
    + ["idle_frac", "idle_max", "idle_periods_per_min"]
    # messages ("bursts": runs of payload packets in one direction without a pause)
    + _per_dir("bursts", "burst_mean", "burst_cv", "burst_max", "burst_interval_mean", "burst_interval_cv",
               "push_frac", "idle_init_frac", "burst_repeat_frac")
    + ["alternation_frac", "exchanges", "exchange_req_mean", "exchange_resp_mean", "exchange_resp_req_ratio",
       "small_sym_frac", "resp_latency_mean"]
    # who pushes what (v3): a "push" is a message that follows the same side's previous
    # message, unasked (a pool's job, an event, a server heartbeat); a "reply" follows the
    # other side's. Mining: the pool pushes near-constant-size jobs, the miner's shares get
    # near-constant tiny acks; telemetry: no pushes at all; chat/feeds: pushes of any size.
    # "late" pushes (past the first LATE_BURST_INDEX messages) leave TLS session tickets
    # and other handshake leftovers out: a pool keeps pushing for the flow's whole life.
    + _per_dir("push_size_mean", "push_size_cv", "push_repeat_frac", "push_interval_cv", "late_push_frac",
               "size_buckets")
    + ["push_per_request", "exchange_req_cv", "exchange_resp_cv"]
    # who waits for whom: the server's mean pause before answering the client, as a share
    # of both sides' mean pauses before answering. Near 0 when the client drives (it
    # thinks, the server answers at once: HTTP, SSH shells); near 1 when the server drives
    # and the client answers at once (the far end of a reverse tunnel or reverse shell).
    + ["server_answer_lat_frac"]
    # nested protocol shape (e.g. a tunnel inside SSH): big bursts past the handshake
    + _per_dir("late_big_bursts")
    + ["late_bursts", "late_big_frac"]
    # steady state (v3): message sizes past the first LATE_BURST_INDEX messages, once
    # logins, TLS and SSH handshakes are over (a miner's shares keep one size there)
    + _per_dir("late_size_mean", "late_size_cv")
    # TCP
    + ["is_tcp", "is_udp", "syn_seen", "synack_seen", "fin_count", "rst_count", "zero_win_count"]
    + _per_dir("psh_frac", "init_win")
    # detectors (zero when signatures are off)
    + ["app_" + g for g in APP_GROUPS]
    + ["det_" + c for c in DETECTION_CATEGORIES]
)

INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}
N_FEATURES = len(FEATURE_NAMES)
SIGNATURE_FEATURES = tuple(n for n in FEATURE_NAMES if n.startswith(("app_", "det_")))
