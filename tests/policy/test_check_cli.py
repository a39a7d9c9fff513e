"""egress check: exit 0 with a one-line summary and digest; exit 2 with file:line: reason lines."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from egress.cli import main

REPO = Path(__file__).resolve().parents[2]
DEFAULT = str(REPO / "rules" / "default.yaml")


def test_valid_files_exit_0_with_digest(capsys):
    assert main(["check", DEFAULT, str(REPO / "rules" / "examples" / "per-sandbox.yaml")]) == 0
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1
    assert re.match(r"ok: 2 files, 4 policies, 2 sandboxes, \d+ rules, digest sha256:[0-9a-f]{12}$", out), out


def test_invalid_file_exits_2_with_every_problem(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\npolicies:\n  p:\n    mode: enforce\n    rules:\n"
                   "      - name: r\n        action: deny\n        dest: [10.0.0.300]\n")
    assert main(["check", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert lines == [
        "%s:3: policy 'p': missing 'default:' action (allow, drop, reject or alert): precedence is first match, "
        "then the explicit default" % bad,
        "%s:7: unknown action 'deny' (expected one of: allow, drop, reject, alert) (did you mean 'drop'?)" % bad,
        "%s:8: dest: '10.0.0.300' is not a valid address or CIDR" % bad,
    ]


def test_sandbox_map_is_checked_too(tmp_path, capsys):
    smap = tmp_path / "map.yaml"
    smap.write_text("version: 1\nentries:\n  - cidr: 10.0.0.0/8\n    sandbox: s\n    episod: 3\n")
    assert main(["check", DEFAULT, "--sandbox-map", str(smap)]) == 2
    assert capsys.readouterr().err.strip() == "%s:5: unknown key 'episod' in entry (did you mean 'episode'?)" % smap
    smap.write_text("version: 1\nentries:\n  - cidr: 10.0.0.0/8\n    sandbox: s\n")
    assert main(["check", DEFAULT, "--sandbox-map", str(smap)]) == 0
    assert capsys.readouterr().out.strip().endswith("sandbox map: 1 entry")


def test_command_line_exit_codes_and_missing_file(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "egress.cli", "check", DEFAULT], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: 1 file, 1 policy")
    missing = subprocess.run([sys.executable, "-m", "egress.cli", "check", str(tmp_path / "no.yaml")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.strip() == "%s: cannot read: No such file or directory" % (tmp_path / "no.yaml")
