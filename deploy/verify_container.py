"""Manual check (root, podman): the egress image as the gateway of a throw-away topology.

    python deploy/verify_container.py [IMAGE]        (default localhost/egress)

Builds sbx/gw/ext namespaces (egl2-*, 10.207.0.0/16), runs a Stratum pool emulator and
an HTTP server in ext, starts the image in gw's network namespace with only NET_ADMIN,
then from sbx: an HTTP GET (must succeed) and a Stratum miner session (the pool must
receive nothing); SIGHUP (must log "reloaded"), SIGTERM (exit 0, no egress rule left).
Not part of the test suite (that must not need podman); see deploy/README.md.
"""
import os, subprocess, sys, tempfile, time
from pathlib import Path
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from egress.drivers.netns import Topology
from egress.drivers.servers import read_record
PY = sys.executable
P = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
NAME = "egl2-gw"
IMAGE = sys.argv[1] if len(sys.argv) > 1 else "localhost/egress"

def sh(*argv, **kw):
    print("$", " ".join(argv), flush=True)
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    out = (r.stdout + r.stderr).strip()
    if out: print(out[-1500:])
    return r

with Topology(subnet4="10.207.0.0/16", subnet6="fd07:207::/48", prefix="egl2-") as topo:
    gwns = topo.ns["gw"]
    ext = topo.addr.ext4
    rec = os.path.join(tempfile.mkdtemp(prefix="egl2-"), "pool.jsonl")
    pool = topo.popen("ext", [PY, "-m", "egress.sim.stratum", "pool", "--listen", "%s:3333" % ext, "--duration", "60",
                              "--record", rec, "--job-interval", "0.3"], stdout=subprocess.PIPE, text=True)
    print(pool.stdout.readline().strip())
    www = topo.popen("ext", [PY, "-m", "http.server", "--bind", ext, "8080", "--directory", str(REPO / "rules")],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        sh(*P, "run", "-d", "--name", NAME, "--network", "ns:/run/netns/" + gwns, "--cap-drop", "ALL", "--cap-add", "NET_ADMIN",
           "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000", IMAGE,
           "--sandbox-iface", topo.sbx_iface, "--rules", "/etc/egress/rules/default.yaml",
           "--eve", "/var/log/egress/eve.json", "--metrics", "127.0.0.1:9108", "-v")
        for _ in range(100):
            r = subprocess.run(P + ["logs", NAME], capture_output=True, text=True)
            if "egress: ready" in r.stdout + r.stderr or "stopped" in r.stdout + r.stderr:
                break
            time.sleep(0.2)
        sh("ip", "netns", "exec", gwns, "iptables", "-S", "EGRESS-FWD")
        r = sh("ip", "netns", "exec", topo.ns["sbx"], "curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}",
               "http://%s:8080/pools.txt" % ext)
        assert r.stdout == "200", "the HTTP GET must pass"
        r = sh("ip", "netns", "exec", topo.ns["sbx"], PY, "-m", "egress.sim.stratum", "client", "--connect", "%s:3333" % ext,
               "--duration", "2", "--share-interval", "0.2", timeout=30)
        received = [x["msg"].get("method") for x in read_record(rec) if x["dir"] == "in"]
        print("methods the pool received:", received)
        assert received == [], "the pool must never see the miner's subscribe/login"
        sh(*P, "kill", "--signal", "HUP", NAME)
        time.sleep(1)
        assert "egress: reloaded" in subprocess.run(P + ["logs", NAME], capture_output=True, text=True).stderr
        sh(*P, "exec", NAME, "sh", "-c", "grep -c . /var/log/egress/eve.json; grep '\"alert\"' /var/log/egress/eve.json | head -2")
        sh(*P, "stop", "-t", "15", NAME)
        assert sh(*P, "inspect", NAME, "--format", "{{.State.ExitCode}}").stdout.strip() == "0"
        sh(*P, "logs", NAME)
        r = sh("ip", "netns", "exec", gwns, "sh", "-c", "iptables-save; ip6tables-save")
        assert "egress" not in r.stdout, "rules left behind"
        print("OK: GET allowed, Stratum login dropped, SIGHUP reloaded, SIGTERM exit 0, rules removed")
    finally:
        subprocess.run(P + ["rm", "-f", NAME], capture_output=True)
