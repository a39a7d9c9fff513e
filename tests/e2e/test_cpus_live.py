"""`egress run --cpus` live: the daemon (every thread of it), or each worker of --workers
(round robin over the list), runs with the affinity asked for and still answers the
queue; Topology.set_rps sets and resets the RPS mask inside a namespace only.

Own topology: namespaces "egh2-...", 10.212.0.0/16 and fd12:212::/48, removed at the end
of the module, also on failure."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.conftest import live_lab
from tests.e2e.lab import Gateway, start_echo

PORT = 7231
MODEL = str(Path(__file__).resolve().parents[2] / "models" / "default")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with live_lab(tmp_path_factory, "cpus", "10.212.0.0/16", "fd12:212::/48", "egh2-") as lab:
        start_echo(lab.topo, lab.ext4, PORT)
        yield lab


def _threads_affinity(pid: int) -> set[frozenset]:
    return {frozenset(os.sched_getaffinity(int(tid))) for tid in os.listdir("/proc/%d/task" % pid)}


def _children(pid: int) -> dict[int, int]:
    """The worker processes of a supervisor: queue -> pid."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(open("/proc/%s/stat" % entry).read().rsplit(")", 1)[1].split()[1])
            argv = open("/proc/%s/cmdline" % entry).read().split("\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and "--queue" in argv:
            out[int(argv[argv.index("--queue") + 1])] = int(entry)
    return out


def test_the_daemon_runs_on_the_cpus_asked_for(lab):
    cpu = max(os.sched_getaffinity(0))
    gw = Gateway(lab.topo, lab.workdir, extra=["--cpus", str(cpu), "--model", MODEL], name="cpus-one")
    try:
        # `ip netns exec` execs the daemon: the process we started is the daemon.
        assert os.sched_getaffinity(gw.proc.pid) == {cpu}
        assert _threads_affinity(gw.proc.pid) == {frozenset({cpu})}      # every thread, model's included
        assert lab.tcp_exchange(lab.ext4, PORT, b"pinned") == "ok:pinned"
    finally:
        assert gw.stop() == 0
    assert "egress: pinned to CPU(s) %d" % cpu in gw.stderr()


def test_each_worker_gets_one_cpu_of_the_list_round_robin(lab):
    cpus = sorted(os.sched_getaffinity(0))
    order = list(reversed(cpus[:2]))                 # "1,0" on two CPUs: the order given counts
    gw = Gateway(lab.topo, lab.workdir, extra=["--queue", "0-1", "--workers", "--cpus", ",".join(map(str, order))],
                 name="cpus-workers")
    try:
        workers = _children(gw.proc.pid)
        assert sorted(workers) == [0, 1], workers
        for index, queue in enumerate((0, 1)):
            want = {order[index % len(order)]}
            assert os.sched_getaffinity(workers[queue]) == want, (queue, want)
            assert _threads_affinity(workers[queue]) == {frozenset(want)}
        # The supervisor itself is not pinned.
        assert os.sched_getaffinity(gw.proc.pid) == set(cpus)
        assert [lab.tcp_exchange(lab.ext4, PORT, b"w%d" % i) for i in range(4)] == ["ok:w%d" % i for i in range(4)]
    finally:
        assert gw.stop() == 0
    log = gw.stderr()
    assert "pinned queue 0 -> CPU %d, queue 1 -> CPU %d" % (order[0], order[1 % len(order)]) in log
    assert "egress[queue 0]: pinned to CPU(s) %d" % order[0] in log


def test_an_unavailable_cpu_is_refused_in_one_line(lab):
    bad = max(os.sched_getaffinity(0)) + 1000
    proc = lab.topo.run("gw", "python3", "-m", "egress.cli", "run", "--cpus", "0,%d" % bad, "--metrics", "off",
                        check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["egress: --cpus 0,%d: CPU %d not available (this process may use %s)"
                                                % (bad, bad, _fmt(sorted(os.sched_getaffinity(0))))]


def _fmt(cpus):
    from egress.commands.run import format_cpus
    return format_cpus(cpus)


def test_set_rps_sets_and_resets_the_mask_inside_the_namespace_only(lab):
    topo = lab.topo
    path = "/sys/class/net/eth0/queues/rx-0/rps_cpus"
    read = lambda role: topo.run(role, "cat", path).stdout.strip()
    root_before = {p: open(p).read() for p in _root_rps_files()}
    cpu = min(os.sched_getaffinity(0))
    try:
        before = topo.set_rps("sbx", [cpu])
        assert before == {path: "0"} or set(before.values()) == {"0"}
        assert int(read("sbx").replace(",", ""), 16) == 1 << cpu
        assert int(read("ext").replace(",", ""), 16) == 0             # the other namespace is untouched
        assert {p: open(p).read() for p in _root_rps_files()} == root_before
        # Traffic still flows with the receive work steered.
        assert lab.tcp_exchange(lab.ext4, PORT, b"rps") == "ok:rps"
    finally:
        topo.set_rps("sbx", ())
    assert int(read("sbx").replace(",", ""), 16) == 0


def _root_rps_files() -> list[str]:
    import glob
    return glob.glob("/sys/class/net/*/queues/rx-*/rps_cpus")
