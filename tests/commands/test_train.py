"""`egress train` on a tiny synthetic corpus: a bundle that loads, reports held-out
metrics, is reproducible, and separates the two shapes it was shown."""
import json
import random

import pytest

from egress.classify import FlowClassifier
from egress.cli import main
from egress.config import EngineConfig
from egress.engine import Engine
from egress.testing.craft import TcpSession, write_pcap
from egress.types import RawPacket


def _miner(rng, i):
    """Server pushes small jobs on a timer, the client submits small shares: low rate, long."""
    s = TcpSession(("10.9.0.%d" % (i + 2), 40000 + i), ("10.9.1.1", rng.choice([443, 3333, 80])),
                   step=0.0005).handshake()
    s.send(True, b'{"id":1,"method":"login"}\n' + b"x" * rng.randrange(60)).send(False, b"j" * rng.randrange(200, 400))
    for _ in range(rng.randrange(12, 30)):
        s.wait(rng.uniform(0.5, 3.0))
        if rng.random() < 0.6:
            s.send(False, b"j" * rng.randrange(200, 400))
        else:
            s.send(True, b"s" * rng.randrange(100, 200)).send(False, b'{"result":true}\n')
    return s.close().packets


def _download(rng, i):
    """The client asks, the server answers with a lot of data, quickly."""
    s = TcpSession(("10.9.2.%d" % (i + 2), 50000 + i), ("10.9.3.1", rng.choice([443, 3333, 80])),
                   step=0.0001).handshake()
    for _ in range(rng.randrange(1, 4)):
        s.send(True, b"GET /pkg HTTP/1.1\r\n" + b"h" * rng.randrange(100, 400))
        s.send(False, b"d" * rng.randrange(5_000, 150_000))
    return s.close().packets


def _corpus(root, seed=0, groups=4, per_group=5):
    rng = random.Random(seed)
    lines = ["file\tflow\tlabel\tscenario\tgroup"]
    for label, make in (("mining", _miner), ("benign", _download)):
        for g in range(groups):
            name = "%s-%d.pcap" % (label, g)
            packets = []
            for k in range(per_group):
                packets += make(rng, g * per_group + k)
            write_pcap(root / name, sorted(packets), linktype=101)
            lines.append("%s\t*\t%s\tsynthetic-%s-%d\t%s-%d" % (name, label, label, g, label, g))
    (root / "labels.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _corpus(tmp_path_factory.mktemp("corpus"))


def test_train_writes_a_bundle_with_heldout_metrics(corpus, tmp_path):
    out = tmp_path / "m"
    assert main(["train", "--corpus", str(corpus), "--out", str(out), "--seed", "3", "--rounds", "10",
                 "--time-scales", "1", "-q"]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["classes"] == ["benign", "mining"]
    assert meta["data"]["flows_per_class"] == {"benign": 20, "mining": 20}
    held = meta["metrics"]["heldout_signatures_off"]["end"]
    assert held["mining"]["flows"] == 5 and held["benign"]["flows"] == 5     # one group of each held out
    assert held["mining"]["recall"] == 1.0 and held["mining"]["fpr"] == 0.0
    card = (out / "MODEL_CARD.md").read_text()
    assert "| class | flows | precision | recall | FPR |" in card
    FlowClassifier.load(out)


def test_training_is_reproducible(corpus, tmp_path):
    for name in ("a", "b"):
        assert main(["train", "--corpus", str(corpus), "--out", str(tmp_path / name), "--seed", "5",
                     "--rounds", "5", "-q"]) == 0
    assert (tmp_path / "a" / "model.json").read_bytes() == (tmp_path / "b" / "model.json").read_bytes()


def test_the_trained_model_classifies_unseen_flows_in_the_engine(corpus, tmp_path):
    out = tmp_path / "m"
    assert main(["train", "--corpus", str(corpus), "--out", str(out), "--rounds", "40", "-q"]) == 0
    rng = random.Random(1234)             # flows the training never saw
    engine = Engine(EngineConfig(signatures=False), classifier=FlowClassifier.load(out))
    packets = sorted(_miner(rng, 200) + _download(rng, 201))
    for ts, data in packets:
        engine.process(RawPacket(ts, data))
    engine.flush()
    got = {e["src_ip"]: e["ml"]["class"] for e in engine.drain_events() if e["event_type"] == "flow"}
    assert got == {"10.9.0.202": "mining", "10.9.2.203": "benign"}


def test_bad_input_is_one_line(tmp_path, capsys):
    (tmp_path / "labels.tsv").write_text("file\tlabel\nx\ty\n")
    assert main(["train", "--corpus", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("egress: train:") and "missing columns" in err and "\n" not in err


def test_holdout_scenarios_are_kept_out_and_reported(corpus, tmp_path):
    out = tmp_path / "m"
    assert main(["train", "--corpus", str(corpus), "--out", str(out), "--rounds", "20", "--time-scales", "1",
                 "--holdout", "synthetic-mining-3", "-q"]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    unseen = meta["metrics"]["unseen_signatures_off"]
    assert list(unseen["per_scenario"]) == ["synthetic-mining-3"]
    assert unseen["per_scenario"]["synthetic-mining-3"]["flows"] == 5
    assert unseen["end"]["mining"]["flows"] == 5
    # the held-out group split ignores the unseen scenario
    assert "mining-3" not in meta["metrics"]["test_groups"]
    assert "Unseen scenarios" in (out / "MODEL_CARD.md").read_text()


def test_leave_one_source_out_on_the_shared_captures(shared_pcaps, tmp_path):
    out = tmp_path / "m"
    assert main(["train", "--shared-pcaps", str(shared_pcaps), "--out", str(out), "--rounds", "10", "--loso",
                 "-q"]) == 0
    loso = json.loads((out / "metadata.json").read_text())["metrics"]["leave_one_source_out"]
    assert set(loso) == {"shared:joy", "shared:ndpi", "shared:peafowl", "shared:sv"}
    # nDPI and peafowl ship the same mining flows: they are removed from training when either is held out
    assert loso["shared:peafowl"]["removed_duplicate_flows"] == 4 and loso["shared:peafowl"]["mining_flows"] == 5
    assert "Leave one real capture source out" in (out / "MODEL_CARD.md").read_text()


def test_card_notes_are_appended_and_recorded_in_the_command(corpus, tmp_path):
    notes = tmp_path / "TUNING.md"
    notes.write_text("## What was tuned after which evaluation\n\n- nothing yet\n")
    out = tmp_path / "m"
    assert main(["train", "--corpus", str(corpus), "--out", str(out), "--rounds", "3", "--time-scales", "1",
                 "--card-notes", str(notes), "-q"]) == 0
    card = (out / "MODEL_CARD.md").read_text()
    assert card.rstrip().endswith("- nothing yet") and "--card-notes %s" % notes in card
    assert main(["train", "--corpus", str(corpus), "--out", str(out), "--card-notes", str(tmp_path / "none.md"),
                 "-q"]) == 2
