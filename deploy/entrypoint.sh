#!/usr/bin/env bash
# egress appliance entrypoint: run the gateway, forward signals, always remove the rules.
#
#   egress-entrypoint [egress run arguments...]
#
# - removes rules a crashed previous run may have left (egress iptables remove),
# - starts `egress run "$@"` (which installs its own iptables rules),
# - forwards SIGHUP (reload rules/model, reopen the EVE file), SIGTERM and SIGINT to it,
# - when it exits, for whatever reason, removes egress's rules again and exits with its
#   status (0 after a SIGTERM drain).
# EGRESS_BIN overrides the egress executable (tests use a fake one).
set -u
EGRESS=${EGRESS_BIN:-egress}

"$EGRESS" iptables remove >/dev/null 2>&1 || true

"$EGRESS" run "$@" &
child=$!

forward() { kill -s "$1" "$child" 2>/dev/null || true; }
trap 'forward HUP' HUP
trap 'forward TERM' TERM
trap 'forward INT' INT

# `wait` returns early whenever a trapped signal arrives: keep waiting until the child is
# gone, then ask once more for its real exit status (bash keeps it for a reaped child).
while kill -0 "$child" 2>/dev/null; do
    wait "$child"
done
wait "$child"
status=$?

"$EGRESS" iptables remove >/dev/null 2>&1 || true
exit "$status"
