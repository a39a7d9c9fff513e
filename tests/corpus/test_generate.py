"""One corpus scenario end to end: real programs in egc- namespaces, a pcap, a label row."""
import os
import shutil
import subprocess

import pytest

from egress.classify.dataset import extract, read_labels


def _need_root():
    if os.geteuid() != 0:
        pytest.skip("corpus generation needs root (network namespaces)")
    for tool in ("ip", "tcpdump"):
        if shutil.which(tool) is None:
            pytest.skip("needs %s" % tool)


@pytest.mark.netns
def test_one_scenario_records_a_labelled_capture(tmp_path):
    _need_root()
    from egress.corpus.generate import generate
    labels = generate(tmp_path, scale="tiny", seed=3, only=["reverse_shell/plain/lines"], concurrency=1,
                      log=lambda m: None, duration=(3.0, 4.0))
    assert [(lab.label, lab.scenario, lab.flow) for lab in labels] == [
        ("reverse_shell", "reverse_shell/plain/lines", "*")]
    assert read_labels(tmp_path / "labels.tsv") == labels
    rows = extract(tmp_path / labels[0].file, signatures=False)
    flows = {flow for flow, stage, _ in rows if stage == "end"}
    assert len(flows) == 1
    (flow,) = flows
    assert flow.startswith("TCP 10.206.0.2:") and " 10.206." in flow   # the sandbox opened it
    # nothing of ours is left behind
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "egc-%x-" % (os.getpid() % 0xFFF) not in left
