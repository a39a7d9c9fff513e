"""Train the flow classifier from labelled captures and write a model bundle.

`egress train --corpus DIR [--shared-pcaps DIR] --out models/NAME [--seed N]`
`egress train --generate-corpus DIR [--scale small|full] --out models/NAME`

Features are extracted by replaying the captures through the engine (the serving
code). The bundle's model card reports per-class precision, recall and false-positive
rate on groups (capture sources / scenario variants) held out of training, with and
without signatures; `--holdout GLOB` also keeps whole scenarios out to test on
traffic the model never saw; `--loso` adds a leave-one-source-out evaluation on the
shared real captures with signatures off. The shipped model is then trained on all rows.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shlex
import sys
import time
from pathlib import Path


DEFAULT_EXCLUDE = ("first_size_*", "resp_latency_mean")
DEFAULT_THRESHOLD = 0.5
DEFAULT_THRESHOLDS = {"mining": 0.5, "reverse_tunnel": 0.8, "reverse_shell": 0.8}
DEFAULT_EARLY = {"packets": 32, "threshold": 0.9}
DEFAULT_MIN_PAYLOAD = 4
DEFAULT_TIME_SCALES = "1,5:0.02,25:0.08,60:0.25"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", action="append", default=[], metavar="DIR",
                   help="corpus directory with labels.tsv and its captures (repeatable)")
    p.add_argument("--shared-pcaps", metavar="DIR", help="real captures with MANIFEST.tsv/FLOWS.tsv labels")
    p.add_argument("--generate-corpus", metavar="DIR", help="first generate a corpus into DIR (root, netns)")
    p.add_argument("--scale", choices=("tiny", "small", "full"), default="small", help="corpus size when generating")
    p.add_argument("--out", required=True, metavar="DIR", help="model bundle directory, e.g. models/default")
    p.add_argument("--name", help="model name (default: the --out directory's name)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rounds", type=int, default=None, help="boosting rounds (default %d)" % 60)
    p.add_argument("--test-fraction", type=float, default=0.25, help="share of each class's groups held out")
    p.add_argument("--holdout", action="append", default=[], metavar="GLOB",
                   help="scenario glob kept out of the evaluation model entirely (unseen-scenario test)")
    p.add_argument("--loso", action="store_true", help="leave-one-source-out evaluation on --shared-pcaps")
    p.add_argument("--loso-seeds", default="", metavar="LIST",
                   help="also repeat the leave-one-source-out evaluation with these seeds (spread of the result)")
    p.add_argument("--fresh-corpus", action="append", default=[], metavar="DIR",
                   help="a corpus generated separately (another seed) to score the shipped model on: fresh"
                        " captures of the same scenarios, never used in training")
    p.add_argument("--benign-weight", type=float, default=2.0, help="weight of the benign class (default 2)")
    p.add_argument("--time-scales", default=DEFAULT_TIME_SCALES, metavar="LIST",
                   help="comma-separated copies of every corpus capture, each STRETCH or STRETCH:RTT (default"
                        " %(default)s): the clock stretched by STRETCH (the corpus runs faster than life; every"
                        " class is stretched alike), then the far end moved RTT seconds away (the corpus runs"
                        " on one host, real peers are 10-300 ms away)"),
    p.add_argument("--exclude-features", default=",".join(DEFAULT_EXCLUDE), metavar="GLOBS",
                   help="comma-separated feature-name globs the model may not use (default: %(default)s: program"
                        " fingerprints and implementation latencies that do not carry over to real traffic)")
    p.add_argument("--threshold", action="append", default=[], metavar="CLASS=P",
                   help="score a class needs to be reported (default %s, others %.2f)"
                        % (json.dumps(DEFAULT_THRESHOLDS), DEFAULT_THRESHOLD))
    p.add_argument("--early", default="%d:%g" % (DEFAULT_EARLY["packets"], DEFAULT_EARLY["threshold"]),
                   metavar="PACKETS:P", help="before PACKETS packets a class needs at least score P (default %(default)s)")
    p.add_argument("--min-payload-packets", type=int, default=DEFAULT_MIN_PAYLOAD, metavar="N",
                   help="a flow with fewer payload packets is reported benign: too little evidence (default %(default)s)")
    p.add_argument("--card-notes", metavar="FILE",
                   help="markdown appended to the model card (e.g. what was changed after which evaluation)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel feature extraction")
    p.add_argument("--quiet", "-q", action="store_true")


def run(args: argparse.Namespace) -> int:
    from egress.classify import dataset, training
    from egress.classify.bundle import save_bundle

    say = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    started = time.time()
    notes = ""
    if args.card_notes:
        try:
            notes = Path(args.card_notes).read_text().strip()
        except OSError as exc:
            return _fail("--card-notes %s: %s" % (args.card_notes, exc.strerror or exc))
    corpora = [Path(c) for c in args.corpus]
    if args.generate_corpus:
        from egress.corpus.generate import generate
        out = Path(args.generate_corpus)
        say("generating a %s corpus into %s" % (args.scale, out))
        generate(out, scale=args.scale, seed=args.seed, log=say)
        corpora.append(out)
    if not corpora and not args.shared_pcaps:
        return _fail("nothing to train on: give --corpus DIR, --generate-corpus DIR or --shared-pcaps DIR")

    rows = []
    try:
        scales = _time_scales(args.time_scales)
        for root in corpora:
            labels = dataset.read_labels(root / "labels.tsv")
            say("%s: %d labelled captures/flows" % (root, len(labels)))
            rows += dataset.labelled_rows(root, labels, "corpus:" + root.name, log=say, time_scales=scales,
                                          workers=args.workers)
        shared_rows = []
        if args.shared_pcaps:
            shared = Path(args.shared_pcaps)
            shared_rows = dataset.labelled_rows(shared, dataset.shared_labels(shared), "shared", log=say)
            rows += shared_rows
    except (OSError, ValueError) as exc:
        return _fail(exc)
    if not rows:
        return _fail("no labelled flows found")
    classes = training.classes_of(rows)
    if len(classes) < 2:
        return _fail("need at least two classes, found only %s" % classes)
    rounds = args.rounds or training.DEFAULT_ROUNDS
    thresholds = {c: DEFAULT_THRESHOLDS.get(c, DEFAULT_THRESHOLD) for c in classes[1:]}
    try:
        packets, _, value = args.early.partition(":")
        early = {"packets": int(packets), "threshold": float(value or 1.0),
                 "min_payload_packets": args.min_payload_packets}
        for item in args.threshold:
            name, _, value = item.partition("=")
            if name not in thresholds or not 0.0 < float(value) <= 1.0:
                return _fail("--threshold %s: want CLASS=P with CLASS one of %s and 0 < P <= 1"
                             % (item, ", ".join(thresholds)))
            thresholds[name] = float(value)
    except ValueError:
        return _fail("--threshold/--early: not a number")
    exclude = [g for g in args.exclude_features.split(",") if g.strip()]
    cw = {"benign": args.benign_weight}
    say("%d rows, %s" % (len(rows), training.summary(rows)["flows_per_class"]))

    # held-out evaluation: groups, plus whole scenarios named by --holdout
    unseen_rows = [r for r in rows if any(fnmatch.fnmatch(r.scenario, g) for g in args.holdout)]
    unseen_ids = {id(r) for r in unseen_rows}
    seen = [r for r in rows if id(r) not in unseen_ids]
    train_groups, test_groups = training.split_groups(seen, args.seed, args.test_fraction)
    train_rows = [r for r in seen if r.group in train_groups]
    test_rows = [r for r in seen if r.group in test_groups]
    evaluation = {"test_groups": sorted(test_groups), "holdout": args.holdout}
    if train_rows and len(training.classes_of(train_rows)) == len(classes):
        eval_model = training.ensemble_of(training.fit(train_rows, classes, args.seed, rounds, exclude=exclude, class_weight=cw))
        for sig in (True, False):
            tag = "signatures_on" if sig else "signatures_off"
            pred = training.predict_flows(eval_model, test_rows, classes, thresholds, sig, **_early(early))
            evaluation["heldout_" + tag] = {"end": training.metrics(pred, classes, "end"),
                                            "any_checkpoint": training.metrics(pred, classes, "any"),
                                            "per_scenario": _per_scenario(pred)}
            if unseen_rows:
                pred = training.predict_flows(eval_model, unseen_rows, classes, thresholds, sig, **_early(early))
                evaluation["unseen_" + tag] = {"end": training.metrics(pred, classes, "end"),
                                               "any_checkpoint": training.metrics(pred, classes, "any"),
                                               "per_scenario": _per_scenario(pred)}
    else:
        say("too few groups for a held-out evaluation (every class needs two or more groups)")
    if args.loso and shared_rows:
        evaluation["leave_one_source_out"] = _loso(rows, classes, thresholds, args.seed, rounds, say, exclude, early, cw)
        seeds = [int(v) for v in args.loso_seeds.split(",") if v.strip()]
        if seeds:
            evaluation["leave_one_source_out_seeds"] = {
                str(seed): _loso(rows, classes, thresholds, seed, rounds, say, exclude, early, cw) for seed in seeds}

    booster = training.fit(rows, classes, args.seed, rounds, exclude=exclude, class_weight=cw)
    if args.fresh_corpus:
        fresh = []
        try:
            for root in (Path(c) for c in args.fresh_corpus):
                fresh += dataset.labelled_rows(root, dataset.read_labels(root / "labels.tsv"), "fresh:" + root.name,
                                               log=say, time_scales=scales, workers=args.workers)
        except (OSError, ValueError) as exc:
            return _fail(exc)
        final = training.ensemble_of(booster)
        for sig in (True, False):
            tag = "signatures_on" if sig else "signatures_off"
            pred = training.predict_flows(final, fresh, classes, thresholds, sig, **_early(early))
            evaluation["fresh_" + tag] = {"end": training.metrics(pred, classes, "end"),
                                          "any_checkpoint": training.metrics(pred, classes, "any"),
                                          "per_scenario": _per_scenario(pred)}
        evaluation["fresh_corpora"] = [str(c) for c in args.fresh_corpus]
    name = args.name or Path(args.out).name
    meta = {
        "data": training.summary(rows),
        "corpora": [str(c) for c in corpora],
        "shared_pcaps": args.shared_pcaps,
        "training": {"command": "egress train " + shlex.join(_argv(args)),
                     "seed": args.seed, "rounds": rounds, "params": training.DEFAULT_PARAMS, "class_weight": cw,
                     "time_scales": list(scales), "excluded_features": exclude,
                     "signature_augmentation": True, "seconds": round(time.time() - started, 1)},
        "metrics": evaluation,
    }
    card = _card(name, classes, thresholds, meta, early)
    if notes:
        card = card.rstrip("\n") + "\n\n" + notes + "\n"
    try:
        save_bundle(args.out, booster, name, classes, thresholds, meta, card,
                    early={"packets": early["packets"], "threshold": early["threshold"]},
                    min_payload_packets=early["min_payload_packets"])
    except OSError as exc:
        return _fail("%s: %s" % (args.out, exc.strerror or exc))
    say("wrote %s (%d classes, %d rows) in %.0fs" % (args.out, len(classes), len(rows), time.time() - started))
    if not args.quiet:
        print(_metrics_text(evaluation, classes))
    return 0


def _time_scales(text: str) -> tuple:
    """"1,5:0.02" -> ((1.0, 0.0), (5.0, 0.02)); ValueError on anything else."""
    out = []
    for item in (v.strip() for v in text.split(",")):
        if item:
            stretch, _, rtt = item.partition(":")
            out.append((float(stretch), float(rtt or 0.0)))
            if out[-1][0] <= 0.0 or out[-1][1] < 0.0:
                raise ValueError("--time-scales %s: a stretch must be > 0 and a round trip >= 0" % item)
    return tuple(out) or ((1.0, 0.0),)


def _argv(args: argparse.Namespace) -> list[str]:
    """The options this run was given, as a command line (for the model card)."""
    out = []
    for c in args.corpus:
        out += ["--corpus", c]
    if args.generate_corpus:
        out += ["--generate-corpus", args.generate_corpus, "--scale", args.scale]
    for c in args.fresh_corpus:
        out += ["--fresh-corpus", c]
    if args.shared_pcaps:
        out += ["--shared-pcaps", args.shared_pcaps]
    out += ["--out", args.out, "--seed", str(args.seed), "--time-scales", args.time_scales]
    if args.name:
        out += ["--name", args.name]
    if args.rounds:
        out += ["--rounds", str(args.rounds)]
    for h in args.holdout:
        out += ["--holdout", h]
    if args.loso:
        out.append("--loso")
    if args.loso_seeds:
        out += ["--loso-seeds", args.loso_seeds]
    if args.min_payload_packets != DEFAULT_MIN_PAYLOAD:
        out += ["--min-payload-packets", str(args.min_payload_packets)]
    if args.card_notes:
        out += ["--card-notes", args.card_notes]
    return out


def _per_scenario(pred: dict) -> dict:
    out: dict[str, dict] = {}
    for v in pred.values():
        rec = out.setdefault(v["scenario"], {"label": v["label"], "flows": 0, "end_correct": 0, "any_flagged": 0,
                                             "end_classes": {}})
        rec["flows"] += 1
        rec["end_correct"] += v["end"] == v["label"]
        rec["any_flagged"] += v["any"] != "benign"
        rec["end_classes"][v["end"]] = rec["end_classes"].get(v["end"], 0) + 1
    return dict(sorted(out.items()))


def _early(early: dict) -> dict:
    return {"early_packets": early["packets"], "early_threshold": early["threshold"],
            "min_payload_packets": early["min_payload_packets"]}


def _loso(rows, classes, thresholds, seed, rounds, say, exclude, early, cw) -> dict:
    """Leave one shared capture source out: train on everything else (minus any flow that
    also occurs in the held-out source: nDPI and peafowl ship the same mining flows),
    score the held-out source with signatures off."""
    from egress.classify import training
    sources = sorted({r.source for r in rows if r.source.startswith("shared:")})
    out = {}
    for src in sources:
        held = [r for r in rows if r.source == src]
        held_flows = {r.flow for r in held}
        train = [r for r in rows if r.source != src and r.flow not in held_flows]
        if len(training.classes_of(train)) < len(classes):
            continue
        ens = training.ensemble_of(training.fit(train, classes, seed, rounds, exclude=exclude, class_weight=cw))
        pred = training.predict_flows(ens, held, classes, thresholds, False, **_early(early))
        mining = [v for v in pred.values() if v["label"] == "mining"]
        benign = [v for v in pred.values() if v["label"] == "benign"]
        out[src] = {
            "mining_flows": len(mining),
            "mining_flagged_end": sum(v["end"] == "mining" for v in mining),
            "mining_flagged_any": sum(v["any"] == "mining" for v in mining),
            "benign_flows": len(benign),
            "benign_flagged_end": sum(v["end"] != "benign" for v in benign),
            "benign_flagged_any": sum(v["any"] != "benign" for v in benign),
            "removed_duplicate_flows": len({training.flow_id(r) for r in rows if r.source != src and r.flow in held_flows}),
        }
        say("loso seed %d %s: %s" % (seed, src, out[src]))
    return out


def _fmt(v) -> str:
    return "-" if v is None else ("%.3f" % v if isinstance(v, float) else str(v))


def _metrics_table(m: dict, classes) -> str:
    lines = ["| class | flows | precision | recall | FPR |", "|---|---|---|---|---|"]
    for c in classes:
        r = m.get(c, {})
        lines.append("| %s | %s | %s | %s | %s |" % (c, r.get("flows"), _fmt(r.get("precision")),
                                                   _fmt(r.get("recall")), _fmt(r.get("fpr"))))
    return "\n".join(lines)


def _metrics_text(ev: dict, classes) -> str:
    parts = []
    for key in ("heldout_signatures_on", "heldout_signatures_off", "unseen_signatures_on", "unseen_signatures_off",
                "fresh_signatures_off"):
        if key in ev:
            parts.append("%s (class at flow end):\n%s" % (key, _metrics_table(ev[key]["end"], classes)))
    if "leave_one_source_out" in ev:
        parts.append(_loso_table(ev["leave_one_source_out"]))
    return "\n\n".join(parts)


def _loso_table(loso: dict) -> str:
    lines = ["| held-out source | mining flows | flagged at end | flagged at any checkpoint | benign flows | "
             "benign flagged (end / any) |", "|---|---|---|---|---|---|"]
    for src, v in loso.items():
        lines.append("| %s | %d | %d | %d | %d | %d / %d |" % (src, v["mining_flows"], v["mining_flagged_end"],
                                                             v["mining_flagged_any"], v["benign_flows"],
                                                             v["benign_flagged_end"], v["benign_flagged_any"]))
    return "\n".join(lines)


def _card(name: str, classes, thresholds, meta: dict, early: dict) -> str:
    ev = meta["metrics"]
    d = meta["data"]
    out = ["# Model card: %s" % name, "",
           "Gradient-boosted trees (XGBoost, JSON format) over egress feature schema v%s, scoring one flow"
           " at checkpoints (after 8, 32, 128, 512 packets, at flow ages 10/60/300 s and at flow end)." % (
               __import__("egress.features.schema", fromlist=["x"]).SCHEMA_VERSION), "",
           "- classes: %s; a non-benign class is reported when its score reaches its threshold %s"
           " (before %d packets, unless the flow ended: at least %.2f); with fewer than %d payload packets a flow"
           " is benign (too little evidence: the model is not run, and no policy rule acts on it)" % (
               ", ".join(classes), json.dumps(thresholds), early["packets"], early["threshold"],
               early["min_payload_packets"]),
           "- training: seed %s, %s rounds, params %s; every row also seen with detector features zeroed"
           " (works with signatures off); corpus captures copied with their clocks stretched by %s (with the"
           " far end that many seconds of round trip away); features not used: %s" % (
               meta["training"]["seed"], meta["training"]["rounds"], json.dumps(meta["training"]["params"]),
               ", ".join("x%g (%g)" % tuple(v) for v in meta["training"]["time_scales"]), ", ".join(meta["training"]["excluded_features"]) or "none"),
           "- data: %d distinct flows (%d with the stretched copies; per class: %s), %d groups, %d scenarios,"
           " sources %s" % (
               d["flows"], d["flow_copies"], json.dumps(d["flows_per_class"]), d["groups"], d["scenarios"],
               json.dumps(d["flows_per_source"])),
           "- reproduce: `%s` (same corpora -> same model; corpora come from `python -m egress.corpus generate"
           " --out DIR --scale S --seed N`, whose captures vary run to run: real programs, real timing)"
           % meta["training"]["command"],
           "- the shipped model is trained on all rows; the numbers below come from models trained"
           " without the evaluated groups. Corpus flows are counted once per clock stretch (%d copies"
           " of each); real captures once." % len(meta["training"]["time_scales"]), ""]
    for key, title in (("heldout_signatures_on", "Held-out groups, signatures on"),
                       ("heldout_signatures_off", "Held-out groups, signatures off (classifier alone)"),
                       ("unseen_signatures_on", "Unseen scenarios (--holdout), signatures on"),
                       ("unseen_signatures_off", "Unseen scenarios (--holdout), signatures off"),
                       ("fresh_signatures_off", "Fresh captures (a corpus generated with another seed), shipped"
                                                " model, signatures off")):
        if key in ev:
            out += ["## %s" % title, "", "Class at flow end:", "", _metrics_table(ev[key]["end"], classes), "",
                    "Flagged at any checkpoint (what an enforcing policy would act on):", "",
                    _metrics_table(ev[key]["any_checkpoint"], classes), ""]
            if "per_scenario" in ev[key]:
                out += ["| scenario | label | flows | correct at end | flagged (non-benign) at any checkpoint |"
                        " classes at end |", "|---|---|---|---|---|---|"]
                for s, v in ev[key]["per_scenario"].items():
                    out.append("| %s | %s | %d | %d | %d | %s |" % (
                        s, v["label"], v["flows"], v["end_correct"], v["any_flagged"],
                        ", ".join("%s %d" % kv for kv in sorted(v.get("end_classes", {}).items()))))
                out.append("")
    if "test_groups" in ev:
        out += ["Held-out groups: %s" % ", ".join(ev["test_groups"]) or "-", ""]
    if "leave_one_source_out" in ev:
        out += ["## Leave one real capture source out (../shared/pcaps, signatures off)", "",
                "Each row: a model trained on the corpus and the other sources (flows that also occur in the"
                " held-out source removed), scoring the held-out source with the detectors switched off.", "",
                _loso_table(ev["leave_one_source_out"]), ""]
        if "leave_one_source_out_seeds" in ev:
            out += ["The same evaluation with other seeds (how much of the above is luck):", "",
                    "| seed | " + " | ".join("%s mining flagged (end/any of n)" % s
                                            for s in ev["leave_one_source_out"] if ev["leave_one_source_out"][s]["mining_flows"])
                    + " | benign flagged (end/any of n), all sources |",
                    "|---|" + "---|" * (1 + sum(1 for v in ev["leave_one_source_out"].values() if v["mining_flows"]))]
            for seed, res in ev["leave_one_source_out_seeds"].items():
                cells = ["%d/%d of %d" % (v["mining_flagged_end"], v["mining_flagged_any"], v["mining_flows"])
                         for v in res.values() if v["mining_flows"]]
                b_end = sum(v["benign_flagged_end"] for v in res.values())
                b_any = sum(v["benign_flagged_any"] for v in res.values())
                b_n = sum(v["benign_flows"] for v in res.values())
                out.append("| %s | %s | %d/%d of %d |" % (seed, " | ".join(cells), b_end, b_any, b_n))
            out.append("")
    out += ["## Limits", "",
            "- The generated corpus comes from emulators and real programs on one Linux host in network"
            " namespaces, with timing scaled down (seconds instead of minutes); real networks add latency,"
            " loss and other TCP stacks.",
            "- Only 9 real mining flows exist in ../shared/pcaps (two capture sources, overlapping); their"
            " numbers are anecdotes, not statistics.", ""]
    return "\n".join(out)


def _fail(reason) -> int:
    print("egress: train: %s" % reason, file=sys.stderr)
    return 2
