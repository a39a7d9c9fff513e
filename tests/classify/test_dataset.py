"""Labelled rows come from the engine; labels match flows; stretched clocks stretch time."""
from collections import Counter

from egress.classify.dataset import Label, extract, labelled_rows, read_labels, shared_labels, write_labels
from egress.features import FEATURE_NAMES
from egress.testing.craft import TcpSession, write_pcap

DUR = FEATURE_NAMES.index("duration")


def _capture(path):
    a = TcpSession(("10.1.0.1", 40000), ("10.1.0.2", 443), step=0.01).handshake()
    for _ in range(20):      # 40 payload packets: the pure ACKs between them do not count
        a.send(True, b"q" * 80).send(False, b"r" * 300).wait(1.0)
    b = TcpSession(("10.1.0.3", 40001), ("10.1.0.2", 80), step=0.01).handshake().send(True, b"GET /").close()
    write_pcap(path, sorted(a.close().packets + b.packets), linktype=101)


def test_rows_per_checkpoint_and_label_matching(tmp_path):
    _capture(tmp_path / "c.pcap")
    labels = [Label("c.pcap", "TCP 10.1.0.1:40000 10.1.0.2:443", "mining", "s", "g")]
    write_labels(tmp_path / "labels.tsv", labels)
    assert read_labels(tmp_path / "labels.tsv") == labels
    rows = labelled_rows(tmp_path, labels, "corpus")
    assert {r.flow for r in rows} == {"TCP 10.1.0.1:40000 10.1.0.2:443"}     # the unlabelled flow is skipped
    stages = [r.stage for r in rows]
    assert stages[0] == "n8" and stages[-1] == "end" and "n32" in stages   # checkpoints, then the flow end
    assert Counter(stages)["end"] == 1 and all(r.label == "mining" and r.group == "g" for r in rows)


def test_time_scale_stretches_the_clock(tmp_path):
    _capture(tmp_path / "c.pcap")
    plain = {f: v for f, s, v in extract(tmp_path / "c.pcap", time_scale=1.0) if s == "end"}
    slow = {f: v for f, s, v in extract(tmp_path / "c.pcap", time_scale=10.0) if s == "end"}
    flow = "TCP 10.1.0.1:40000 10.1.0.2:443"
    assert abs(slow[flow][DUR] - 10 * plain[flow][DUR]) < 1e-3
    rows = labelled_rows(tmp_path, [Label("c.pcap", "*", "benign", "s", "g")], "corpus", time_scales=(1.0, 5.0),
                         workers=2)
    assert {r.file for r in rows} == {"c.pcap", "c.pcap@x5"}


def test_shared_capture_labels_match_engine_flows(shared_pcaps):
    labels = shared_labels(shared_pcaps)
    mining = [lab for lab in labels if lab.label == "mining"]
    assert len(mining) == 9
    rows = labelled_rows(shared_pcaps, mining, "shared")
    ends = {(r.file, r.flow) for r in rows if r.stage == "end"}
    assert ends == {(lab.file, lab.flow) for lab in mining}     # every labelled flow was found by the engine


def test_round_trip_delays_answers_not_pushes():
    """With the far end 0.1 s away: the SYN-ACK and every answer to the client come 0.1 s
    later per turn; pushes the server sends unasked keep their spacing; nothing is lost."""
    from egress.classify.dataset import with_rtt
    from egress.decode import decode
    from egress.types import RawPacket
    s = TcpSession(("10.1.0.1", 40000), ("10.1.0.2", 3333), step=0.001).handshake()
    s.send(True, b"login").send(False, b"ok").wait(1.0).send(False, b"job1").wait(1.0).send(False, b"job2")
    s.wait(1.0).send(True, b"share").send(False, b"ack")
    raws = [RawPacket(ts, data, 101) for ts, data in sorted(s.packets)]
    moved = with_rtt(raws, 0.1)
    assert len(moved) == len(raws) and [r.ts for r in moved] == sorted(r.ts for r in moved)
    when = {r.data: r.ts for r in moved}
    shift = {decode(r).payload or decode(r).flags: round(when[r.data] - r.ts, 6) for r in raws}
    assert shift[0x12] == 0.1                                           # SYN-ACK: one round trip
    assert shift[b"ok"] == 0.2 and shift[b"job1"] == 0.2 and shift[b"job2"] == 0.2
    assert shift[b"share"] == 0.2 and shift[b"ack"] == 0.3
