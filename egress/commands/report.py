"""Summarize policy violations per sandbox and episode from EVE JSON files.

`egress report [--json] [--sandbox ID] [--episode ID] [--details] EVE.json...` ('-' = stdin)

A violation is a flow whose verdict was not a plain allow: drop or reject (enforced,
or only logged in audit mode) or allow-with-alert, or any flow that produced an
alert event (a detection). Each flow counts once, by flow_id within its file;
its final verdict comes from its "flow" event (or from its last alert when the flow
event is missing). Groups are (sandbox id, episode); flows without attribution go
to sandbox null. Exit 0; unreadable or non-EVE input: exit 2 with one line.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any, Iterable


class ReportError(Exception):
    pass


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("eve", nargs="+", metavar="EVE", help="EVE JSON lines files ('-' for stdin)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--sandbox", metavar="ID", help="only this sandbox")
    p.add_argument("--episode", metavar="ID", help="only this episode")
    p.add_argument("--details", action="store_true", help="list every violating flow")


def run(args: argparse.Namespace) -> int:
    try:
        flows, events = collect(args.eve)
    except ReportError as exc:
        print("egress report: %s" % exc, file=sys.stderr)
        return 2
    report = summarize(flows.values(), events, args.sandbox, args.episode, args.details)
    if args.json:
        json.dump(report, sys.stdout, indent=2, sort_keys=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_table(report))
    return 0


# -- reading ---------------------------------------------------------------------------

def _lines(path: str) -> Iterable[tuple[int, str]]:
    try:
        if path == "-":
            yield from enumerate(sys.stdin, 1)
            return
        with open(path, encoding="utf-8") as f:
            yield from enumerate(f, 1)
    except OSError as exc:
        raise ReportError("%s: cannot read: %s" % (path, exc.strerror or exc)) from None
    except UnicodeDecodeError:
        raise ReportError("%s: not UTF-8 text" % path) from None


def collect(paths: list[str]) -> tuple[dict, int]:
    """(file, flow_id) -> merged record; raises ReportError on the first bad line."""
    flows: dict[tuple[str, Any], dict] = {}
    events = 0
    for path in paths:
        for n, line in _lines(path):
            if not line.strip():
                continue
            try:
                ev = json.loads(line)
            except ValueError as exc:
                raise ReportError("%s:%d: not JSON (%s)" % (path, n, exc)) from None
            if not isinstance(ev, dict) or "event_type" not in ev:
                raise ReportError("%s:%d: not an EVE event (no event_type)" % (path, n))
            events += 1
            kind = ev["event_type"]
            if kind not in ("flow", "alert"):
                continue
            key = (path, ev.get("flow_id"))
            rec = flows.get(key)
            if rec is None:
                rec = flows[key] = {"alerts": 0, "event": None, "categories": set(), "signatures": set(),
                                    "first": ev.get("timestamp"), "sandbox": None}
            if isinstance(ev.get("sandbox"), dict):
                rec["sandbox"] = ev["sandbox"]
            for d in ev.get("detections") or (ev.get("alert") or {}).get("detections") or ():
                if isinstance(d, dict):
                    if d.get("category"):
                        rec["categories"].add(str(d["category"]))
                    if d.get("signature"):
                        rec["signatures"].add(str(d["signature"]))
            if kind == "alert":
                rec["alerts"] += 1
                if rec["event"] is None or rec["event"].get("event_type") == "alert":
                    rec["event"] = ev
            else:
                rec["event"] = ev
    return flows, events


# -- summarizing ----------------------------------------------------------------------------

def _verdict(ev: dict) -> dict:
    v = ev.get("verdict")
    if isinstance(v, dict):
        return v
    alert = ev.get("alert")
    if isinstance(alert, dict) and isinstance(alert.get("verdict"), dict):
        return alert["verdict"]
    return {}


def _classify(rec: dict) -> str | None:
    """'drop' / 'reject' / 'alert' for a violation, None for a clean flow."""
    v = _verdict(rec["event"])
    action = v.get("action", "allow")
    if action in ("drop", "reject"):
        return action
    if rec["alerts"] or rec["categories"]:
        return "alert"
    return None


def summarize(records: Iterable[dict], events: int, sandbox: str | None = None,
              episode: str | None = None, details: bool = False) -> dict:
    groups: dict[tuple, dict] = {}
    total_flows = 0
    for rec in records:
        ev = rec["event"]
        if ev is None:
            continue
        sbx = rec["sandbox"] or {}
        sid, eid = sbx.get("id"), sbx.get("episode")
        if sandbox is not None and str(sid) != sandbox:
            continue
        if episode is not None and str(eid) != episode:
            continue
        total_flows += 1
        g = groups.get((sid, eid))
        if g is None:
            g = groups[(sid, eid)] = {"sandbox": sid, "episode": eid, "flows": 0, "violations": 0,
                                      "enforced": Counter(), "audit": Counter(), "rules": Counter(),
                                      "categories": Counter(), "first": None, "last": None, "flows_detail": []}
        g["flows"] += 1
        kind = _classify(rec)
        if kind is None:
            continue
        v = _verdict(ev)
        mode = v.get("mode", "enforce")
        g["violations"] += 1
        (g["audit"] if mode == "audit" else g["enforced"])[kind] += 1
        if v.get("rule"):
            g["rules"][v["rule"]] += 1
        for c in rec["categories"]:
            g["categories"][c] += 1
        ts = rec["first"] or ev.get("timestamp")
        if ts is not None:
            g["first"] = ts if g["first"] is None or str(ts) < str(g["first"]) else g["first"]
            g["last"] = ts if g["last"] is None or str(ts) > str(g["last"]) else g["last"]
        if details:
            g["flows_detail"].append({
                "flow_id": ev.get("flow_id"), "timestamp": ts, "src_ip": ev.get("src_ip"),
                "src_port": ev.get("src_port"), "dest_ip": ev.get("dest_ip"), "dest_port": ev.get("dest_port"),
                "proto": ev.get("proto"), "app_proto": ev.get("app_proto"), "action": kind, "mode": mode,
                "rule": v.get("rule"), "reasons": v.get("reasons", []),
                "categories": sorted(rec["categories"]), "signatures": sorted(rec["signatures"])})
    out_groups = []
    for (sid, eid), g in sorted(groups.items(), key=lambda kv: (-kv[1]["violations"], str(kv[0][0]), str(kv[0][1]))):
        item = {"sandbox": sid, "episode": eid, "flows": g["flows"], "violations": g["violations"],
                "enforced": dict(g["enforced"]), "audit": dict(g["audit"]),
                "rules": dict(g["rules"].most_common()), "categories": dict(g["categories"].most_common()),
                "first": g["first"], "last": g["last"]}
        if details:
            item["details"] = g["flows_detail"]
        out_groups.append(item)
    return {"events": events, "flows": total_flows,
            "violations": sum(g["violations"] for g in out_groups), "groups": out_groups}


def render_table(report: dict) -> str:
    header = ("SANDBOX", "EPISODE", "FLOWS", "VIOL", "DROP", "REJECT", "ALERT", "AUDIT", "TOP RULES / CATEGORIES")
    rows = [header]
    for g in report["groups"]:
        enforced = g["enforced"]
        top = ", ".join("%s:%d" % kv for kv in list(g["rules"].items())[:3])
        cats = ", ".join(list(g["categories"])[:4])
        rows.append((_text(g["sandbox"], "-"), _text(g["episode"], "-"), str(g["flows"]), str(g["violations"]),
                     str(enforced.get("drop", 0)), str(enforced.get("reject", 0)), str(enforced.get("alert", 0)),
                     str(sum(g["audit"].values())), "; ".join(x for x in (top, cats) if x) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    for g in report["groups"]:
        for d in g.get("details", ()):
            lines.append("  %s %s/%s %s %s:%s -> %s:%s %s rule=%s %s" % (
                _text(g["sandbox"], "-"), _text(g["episode"], "-"), d["action"], d["proto"], d["src_ip"],
                d["src_port"], d["dest_ip"], d["dest_port"], d["app_proto"] or "-", d["rule"],
                "; ".join(d["reasons"])))
    lines.append("%d event(s), %d flow(s), %d violation(s)" % (report["events"], report["flows"], report["violations"]))
    return "\n".join(lines) + "\n"


def _text(value: Any, empty: str) -> str:
    return empty if value is None else str(value)
