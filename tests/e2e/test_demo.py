"""`egress demo`: the scripted scenario gives the expected outcome per step, and the demo
leaves nothing behind, whether it finishes or is interrupted."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.e2e.conftest import require_live


def our_namespaces() -> set[str]:
    return {n for n in os.listdir("/run/netns") if n.startswith("egl-")} if os.path.isdir("/run/netns") else set()


def test_demo_blocks_the_hostile_steps_and_cleans_up():
    require_live()
    if not os.path.exists("/usr/sbin/sshd"):
        pytest.skip("the demo needs OpenSSH's sshd")
    before = our_namespaces()
    proc = subprocess.run([sys.executable, "-m", "egress.cli", "demo", "--no-model"], capture_output=True, text=True,
                          timeout=90)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("  ")[1].strip(): line for line in proc.stdout.splitlines() if line.startswith("  ")}
    expect = {"HTTPS download": ("sha256 intact", "allow"), "git clone": ("cloned", "allow"),
              "Stratum miner": ("never received", "drop"), "XMRig-style": ("never received", "drop"),
              "ssh -R": ("failed", "reject"), "reverse shell": ("never ran", "drop"), "DNS lookup": ("resolved", "allow")}
    for prefix, (outcome, verdict) in expect.items():
        row = next(line for name, line in rows.items() if name.startswith(prefix))
        assert outcome in row and " %s " % verdict in row, row
    assert our_namespaces() == before


def test_interrupted_demo_removes_everything():
    require_live()
    before = our_namespaces()
    proc = subprocess.Popen([sys.executable, "-m", "egress.cli", "demo", "--no-model"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while our_namespaces() == before and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)                       # servers starting, gateway coming up
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "removed" in err
    assert our_namespaces() == before
