"""deploy/entrypoint.sh under bash with a fake `egress`: signals reach the daemon, the
rules are removed before and after, and the daemon's exit status is the container's."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

ENTRYPOINT = Path(__file__).resolve().parents[2] / "deploy" / "entrypoint.sh"

FAKE = """\
#!/usr/bin/env bash
log=%(log)s
echo "$*" >> "$log"
if [ "$1" = run ]; then
    trap 'echo HUP >> "$log"' HUP
    trap 'echo TERM >> "$log"; exit 0' TERM
    echo READY >> "$log"
    for i in $(seq 1 200); do
        [ "$2" = --fail ] && exit 2
        sleep 0.05
    done
    exit 9
fi
"""


@pytest.fixture
def fake_egress(tmp_path):
    log = tmp_path / "log"
    fake = tmp_path / "egress"
    fake.write_text(FAKE % {"log": log})
    fake.chmod(0o755)
    return fake, log


def start(fake, *args):
    env = dict(os.environ, EGRESS_BIN=str(fake))
    return subprocess.Popen(["bash", str(ENTRYPOINT), *args], env=env)


def wait_for(log: Path, text: str, count: int = 1, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().splitlines().count(text) >= count:
            return
        time.sleep(0.02)
    raise AssertionError("%r not logged: %s" % (text, log.read_text() if log.exists() else ""))


def test_hup_is_forwarded_and_term_drains_then_removes_rules(fake_egress):
    fake, log = fake_egress
    proc = start(fake, "--queue", "0", "--rules", "r.yaml")
    wait_for(log, "READY")
    proc.send_signal(signal.SIGHUP)
    wait_for(log, "HUP")
    proc.send_signal(signal.SIGHUP)
    wait_for(log, "HUP", count=2)
    assert proc.poll() is None                      # a reload does not end the container
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 0
    assert log.read_text().splitlines() == ["iptables remove", "run --queue 0 --rules r.yaml", "READY", "HUP", "HUP",
                                            "TERM", "iptables remove"]


def test_daemon_failure_status_is_kept_and_rules_still_removed(fake_egress):
    fake, log = fake_egress
    proc = start(fake, "--fail")
    assert proc.wait(5) == 2
    assert log.read_text().splitlines()[-1] == "iptables remove"
