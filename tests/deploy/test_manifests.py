"""deploy/: the Kubernetes manifests parse and carry what the gateway needs (and no
more); the systemd unit reloads with SIGHUP; the Containerfile takes its base as an ARG."""
from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def docs(name):
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if d]


def only_net_admin(container):
    sc = container["securityContext"]
    assert sc["capabilities"]["add"] == ["NET_ADMIN"] and sc["capabilities"]["drop"] == ["ALL"]
    assert not sc.get("privileged") and sc.get("allowPrivilegeEscalation") is False


def test_daemonset_is_a_valid_gateway_with_only_net_admin_and_a_valid_policy(tmp_path):
    by_kind = {d["kind"]: d for d in docs("daemonset.yaml")}
    assert set(by_kind) == {"Namespace", "ConfigMap", "DaemonSet"}
    ds = by_kind["DaemonSet"]
    assert ds["apiVersion"] == "apps/v1"
    spec = ds["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    pod = spec["template"]["spec"]
    assert pod["hostNetwork"] is True
    (container,) = pod["containers"]
    only_net_admin(container)
    args = container["args"]
    assert any(a.startswith("--rules=") for a in args) and "--fail-closed" in args
    assert "--metrics=127.0.0.1:9108" in args
    nets = [a.split("=", 1)[1] for a in args if a.startswith("--sandbox-net=")]
    assert any(":" in n for n in nets) and any("." in n for n in nets)      # v4 and v6
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"] for v in pod["volumes"]}
    assert set(mounts) <= volumes
    rules_arg = next(a.split("=", 1)[1] for a in args if a.startswith("--rules="))
    assert rules_arg.startswith(mounts["rules"] + "/")
    # The rules in the ConfigMap are a policy egress accepts.
    from egress.policy import PolicyEngine
    name = Path(rules_arg).name
    (tmp_path / name).write_text(by_kind["ConfigMap"]["data"][name])
    PolicyEngine.load([str(tmp_path / name)])


def test_sidecar_starts_egress_first_and_gives_the_sandbox_nothing():
    (pod,) = docs("sidecar.yaml")
    assert pod["kind"] == "Pod"
    (sidecar,) = pod["spec"]["initContainers"]
    assert sidecar["restartPolicy"] == "Always" and "startupProbe" in sidecar
    assert "--mode=sidecar" in sidecar["args"] and "--metrics=off" in sidecar["args"]
    only_net_admin(sidecar)
    for c in pod["spec"]["containers"]:
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert "add" not in c["securityContext"]["capabilities"]


def test_systemd_unit_reloads_with_hup_and_cleans_up(tmp_path):
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(DEPLOY / "egress.service")
    svc = unit["Service"]
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert "egress run" in svc["ExecStart"] and "iptables remove" in svc["ExecStopPost"]
    assert svc["CapabilityBoundingSet"] == "CAP_NET_ADMIN"
    egress = shutil.which("egress")
    if shutil.which("systemd-analyze") and egress:
        # verify checks that executables exist: point it at this machine's egress.
        copy = tmp_path / "egress.service"
        copy.write_text((DEPLOY / "egress.service").read_text().replace("/usr/local/bin/egress", egress))
        out = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
        problems = [l for l in out.stderr.splitlines() if "egress.service" in l]
        assert out.returncode == 0 and not problems, out.stderr


def test_containerfile_base_is_a_build_arg_and_entrypoint_is_installed():
    text = (DEPLOY / "Containerfile").read_text()
    assert text.splitlines()[[l.startswith("ARG BASE_IMAGE") for l in text.splitlines()].index(True)] \
        == "ARG BASE_IMAGE=debian:bookworm-slim"
    assert text.count("FROM ${BASE_IMAGE}") == 2
    assert 'ENTRYPOINT ["/usr/local/bin/egress-entrypoint"]' in text
    assert (DEPLOY / "Dockerfile").resolve() == (DEPLOY / "Containerfile").resolve()
