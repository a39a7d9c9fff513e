"""`egress run` argument handling: queue ranges, and the command line of each worker of --workers."""
from __future__ import annotations

import os

import argparse

import pytest

from egress.commands.run import add_arguments, config_from_args, parse_queues, worker_argv


def parse(*argv):
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def test_queue_ranges():
    assert parse_queues("3") == (3,) and parse_queues("0-2") == (0, 1, 2)
    for bad in ("2-1", "x", "70000"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_queues(bad)


def test_defaults_are_fail_closed_loopback_metrics_and_no_gso():
    cfg = config_from_args(parse())
    assert cfg.fail_open is False and cfg.bypass is False and cfg.metrics == "127.0.0.1:9108"
    assert cfg.gso is False and cfg.fast_path is True and cfg.exception_action == "drop"
    assert config_from_args(parse("--metrics", "off")).metrics is None
    open_cfg = config_from_args(parse("--fail-open"))
    assert open_cfg.fail_open and open_cfg.bypass


def test_watch_group_default_off_and_bad_values():
    from egress.drivers.nflog import DEFAULT_WATCH_GROUP
    assert config_from_args(parse()).watch_group == DEFAULT_WATCH_GROUP
    assert config_from_args(parse("--watch-group", "off")).watch_group is None
    assert config_from_args(parse("--watch-group", "77")).watch_group == 77
    for bad in ("x", "-1", "70000"):
        with pytest.raises(SystemExit):
            parse("--watch-group", bad)
    # A worker of a supervisor without the watch path keeps it off.
    argv = worker_argv(parse("--queue", "0-1", "--workers", "--watch-group", "off"), 0, 0)
    assert argv[argv.index("--watch-group") + 1] == "off"


def test_flow_timeouts_and_verdict_batch_reach_the_daemon_and_its_workers():
    args = parse("--flow-timeout", "tcp_established=30", "--flow-timeout", "udp=5.5", "--verdict-batch", "4",
                 "--queue", "0-1", "--workers")
    cfg = config_from_args(args)
    assert cfg.flow_timeouts == (("tcp_established", 30.0), ("udp", 5.5)) and cfg.verdict_batch == 4
    worker = config_from_args(parse(*worker_argv(args, 1, 1)[4:]))
    assert worker.flow_timeouts == cfg.flow_timeouts and worker.verdict_batch == 4
    assert config_from_args(parse()).flow_timeouts == () and config_from_args(parse()).verdict_batch == 8
    for bad in ("tcp_established", "tcp_forever=3", "udp=soon", "udp=0", "udp=-1"):
        with pytest.raises(SystemExit):
            parse("--flow-timeout", bad)
    for bad in ("0", "-3", "x", "5000"):
        with pytest.raises(SystemExit):
            parse("--verdict-batch", bad)


def test_worker_command_lines_split_eve_and_metrics_per_queue():
    args = parse("--queue", "4-5", "--workers", "--rules", "a.yaml", "--rules", "b.yaml", "--eve", "/var/log/eve.json",
                 "--metrics", "127.0.0.1:9200", "--fail-open", "--sandbox-iface", "sbx0")
    argv = worker_argv(args, 1, 5)
    joined = " ".join(argv)
    assert "--queue 5 --no-rules" in joined and "--fail-open" in argv
    assert "--rules a.yaml --rules b.yaml" in joined
    assert "--eve /var/log/eve.q5.json" in joined and "--metrics 127.0.0.1:9201" in joined
    # The supervisor installs the rules; a worker never does, and needs no interface.
    assert "--sandbox-iface" not in argv
    # Its slot (connmark, NFLOG group) and its peers (shared DNS answers).
    assert "--slot 1 --peers %d:2" % os.getpid() in joined and "--watch-group 5700" in joined


def test_bad_rules_stop_the_daemon_before_it_touches_the_kernel(tmp_path, capsys, monkeypatch):
    from egress import cli
    from egress.drivers import iptables, nfqueue

    def boom(*a, **k):
        raise AssertionError("must not be reached")
    monkeypatch.setattr(nfqueue.QueueDriver, "open", boom)
    monkeypatch.setattr(iptables.Iptables, "install", boom)
    from egress.daemon import Daemon
    monkeypatch.setattr(Daemon, "install_signal_handlers", lambda self: None)   # keep pytest's handlers
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\npolicies:\n  p:\n    rules: [{name: x, action: explode}]\n")
    assert cli.main(["run", "--rules", str(bad), "--metrics", "off"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("egress: ") and "bad.yaml" in err[0]
