"""Shared fixtures: where the real third-party captures are, and root/netns checks."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_PCAPS = REPO_ROOT.parent / "shared" / "pcaps"


def shared_pcaps_dir() -> Path | None:
    """../shared/pcaps next to the checkout (also in CI's fresh clone), or None."""
    override = os.environ.get("EGRESS_SHARED_PCAPS")
    path = Path(override) if override else SHARED_PCAPS
    return path if (path / "FLOWS.tsv").is_file() else None


@pytest.fixture(scope="session")
def shared_pcaps() -> Path:
    path = shared_pcaps_dir()
    if path is None:
        pytest.skip("../shared/pcaps (real third-party captures) is not present next to the checkout")
    return path


@pytest.fixture(scope="session")
def shared_flows(shared_pcaps) -> dict[str, list[dict]]:
    """FLOWS.tsv rows (dicts of its columns), grouped by capture file name."""
    import csv
    from collections import defaultdict
    rows: dict[str, list[dict]] = defaultdict(list)
    with open(shared_pcaps / "FLOWS.tsv") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            rows[row["file"]].append(row)
    return rows


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


def require_root_netns() -> None:
    """Skip (with the reason) unless we can build network namespaces with iptables."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            pytest.skip("needs %s on PATH" % tool)
