"""`egress run --cpus LIST`: the CPU list parser, its validation (one line, exit 2, before
anything touches the kernel), the workers' round robin, and the RPS mask format of
Topology.set_rps. The live pinning is in tests/e2e/test_cpus_live.py."""
from __future__ import annotations

import argparse
import os

import pytest

from egress.commands.run import add_arguments, check_cpus, config_from_args, format_cpus, parse_cpus, worker_argv
from egress.drivers.netns import cpu_mask


def parse(*argv):
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


@pytest.mark.parametrize("text, cpus", [
    ("1", (1,)), ("0-1", (0, 1)), ("0,1", (0, 1)), ("1,0", (1, 0)), ("0-2,5", (0, 1, 2, 5)),
    (" 3 , 1-2 ", (3, 1, 2)), ("7-7", (7,)),
])
def test_good_cpu_lists_keep_the_order_given(text, cpus):
    assert parse_cpus(text) == cpus


@pytest.mark.parametrize("text, reason", [
    ("", "CPU list must be"), ("x", "CPU list must be"), ("1,", "CPU list must be"), ("0-", "CPU list must be"),
    ("-1", "CPU list must be"), ("1.5", "CPU list must be"), ("2-1", "bad CPU range"), ("0,0", "CPU 0 twice"),
    ("0-2,1", "CPU 1 twice"),
])
def test_bad_cpu_lists_are_refused_with_a_reason(text, reason):
    with pytest.raises(ValueError) as info:
        parse_cpus(text)
    assert reason in str(info.value) and "\n" not in str(info.value)


def test_cpus_this_process_may_not_use_are_refused():
    assert check_cpus("1", available={0, 1}) == (1,)
    with pytest.raises(ValueError, match=r"CPU 2,3 not available \(this process may use 0-1\)"):
        check_cpus("0-3", available={0, 1})
    # By default: the process's own affinity.
    mine = sorted(os.sched_getaffinity(0))
    assert check_cpus(format_cpus(mine)) == tuple(mine)
    with pytest.raises(ValueError, match="not available"):
        check_cpus(str(max(mine) + 1000))


def test_format_cpus_compresses_ranges():
    assert format_cpus([0, 1, 2, 5]) == "0-2,5" and format_cpus([3]) == "3" and format_cpus([]) == ""


def test_config_and_worker_command_lines_round_robin():
    assert config_from_args(parse()).cpus == ()
    assert config_from_args(parse("--cpus", "1")).cpus == (1,)
    args = parse("--queue", "0-2", "--workers", "--cpus", "1,0")
    pinned = []
    for index, queue in enumerate(args.queue):
        argv = worker_argv(args, index, queue)
        assert argv.count("--cpus") == 1
        pinned.append(argv[argv.index("--cpus") + 1])
    assert pinned == ["1", "0", "1"]          # worker i -> cpus[i % len]
    assert "--cpus" not in worker_argv(parse("--queue", "0-1", "--workers"), 0, 0)


@pytest.mark.parametrize("bad", ["x", "2-1", "0,0", "100000"])
def test_bad_cpus_exit_2_with_one_line_before_touching_the_kernel(bad, capsys, monkeypatch):
    from egress import cli
    from egress.daemon import Daemon, Supervisor
    from egress.drivers import iptables, nfqueue

    def boom(*a, **k):
        raise AssertionError("must not be reached")
    monkeypatch.setattr(nfqueue.QueueDriver, "open", boom)
    monkeypatch.setattr(iptables.Iptables, "install", boom)
    monkeypatch.setattr(Daemon, "start", boom)
    monkeypatch.setattr(Supervisor, "run", boom)
    monkeypatch.setattr(os, "sched_setaffinity", boom)
    for extra in ([], ["--queue", "0-1", "--workers"]):
        assert cli.main(["run", "--cpus", bad, "--metrics", "off", *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("egress: --cpus %s: " % bad), err


def test_pin_cpus_pins_every_thread_and_reports_the_affinity():
    """In a child process (pinning pytest itself would slow the rest of the run)."""
    import threading
    from egress.daemon import pin_cpus
    target = max(os.sched_getaffinity(0))
    pid = os.fork()
    if pid == 0:                                            # child: exit status says what happened
        code = 1
        try:
            stop = threading.Event()
            t = threading.Thread(target=stop.wait, daemon=True)
            t.start()                                        # a thread that exists before the pinning
            got = pin_cpus([target])
            tids = os.listdir("/proc/self/task")
            ok = got == {target} and len(tids) >= 2 and all(os.sched_getaffinity(int(tid)) == {target}
                                                             for tid in tids)
            code = 0 if ok else 3
            stop.set()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_rps_masks_are_hex_words_as_sysfs_reads_them():
    assert cpu_mask(()) == "0" and cpu_mask([0]) == "1" and cpu_mask([1]) == "2" and cpu_mask([0, 1]) == "3"
    assert cpu_mask([0, 2, 3]) == "d" and cpu_mask([33]) == "2,00000000" and cpu_mask([0, 32]) == "1,00000001"
