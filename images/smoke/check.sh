#!/bin/sh
# shellcheck disable=SC2317 # the small functions below are called through wait_for
# The smoke test's checks, run inside the guest by edge-recorder-smoke.service once the system
# is up (images/smoke.sh installs it as /usr/local/sbin/edge-recorder-smoke-check). Each line
# it prints starts with "SMOKE"; it goes to the serial console, where images/smoke.sh reads
# it. The last line is "SMOKE RESULT: pass" or "SMOKE RESULT: fail (N)", then the guest powers
# off.
set -u

CLI=/opt/edge-recorder/bin/edge-recorder
CONFIG=/etc/edge-recorder/config.toml
failures=0

pass() { echo "SMOKE PASS: $*"; }
fail() {
    echo "SMOKE FAIL: $*"
    failures=$((failures + 1))
}
note() { echo "SMOKE NOTE: $*"; }
prop() { systemctl show --property="$2" --value "$1"; }

# wait_for SECONDS COMMAND...: run COMMAND once a second until it succeeds; 1 after SECONDS.
wait_for() {
    limit=$1
    shift
    waited=0
    until "$@"; do
        waited=$((waited + 1))
        [ "$waited" -ge "$limit" ] && return 1
        sleep 1
    done
}

finish() {
    echo "SMOKE NOTE: edge-recorder-provision.service log:"
    journalctl --boot --unit=edge-recorder-provision.service --output=cat --no-pager | sed 's/^/SMOKE LOG: /'
    echo "SMOKE NOTE: edge-recorder.service log (last 40 lines):"
    journalctl --boot --unit=edge-recorder.service --output=cat --no-pager --lines=40 | sed 's/^/SMOKE LOG: /'
    if [ "$failures" -eq 0 ]; then
        echo "SMOKE RESULT: pass"
    else
        echo "SMOKE RESULT: fail ($failures)"
    fi
    systemctl --no-block poweroff
    exit 0
}

note "kernel $(uname -r) on $(uname -m), $(nproc) CPUs, up $(cut -d' ' -f1 /proc/uptime) s"

# --- first-boot provisioning ---------------------------------------------------------------
if [ "$(prop edge-recorder-provision.service ExecMainStartTimestampMonotonic)" != 0 ]; then
    status=$(prop edge-recorder-provision.service ExecMainStatus)
    result=$(prop edge-recorder-provision.service Result)
    if [ "$status" = 0 ] && [ "$result" = success ]; then
        pass "provisioning ran at the first boot (exit 0)"
    else
        fail "provisioning ran but ended $result, exit status $status"
    fi
else
    fail "edge-recorder-provision.service did not run (no edge-recorder.toml on /boot/firmware?)"
fi
if grep -q 'images/smoke.sh' "$CONFIG" 2>/dev/null; then
    pass "the first-boot file is $CONFIG ($(stat -c '%a %U:%G' "$CONFIG"))"
else
    fail "$CONFIG is not the first-boot file"
fi
for file in "$CONFIG" /etc/edge-recorder/encryption.pub; do
    mode=$(stat -c '%a %U:%G' "$file" 2>/dev/null || echo missing)
    if [ "$mode" = "640 root:edge-recorder" ]; then
        pass "$file is 640 root:edge-recorder"
    else
        fail "$file is $mode, not 640 root:edge-recorder"
    fi
done
if [ -e /boot/firmware/edge-recorder.toml ] || [ -e /boot/firmware/edge-recorder ]; then
    fail "the first-boot files are still on the boot partition: $(ls /boot/firmware)"
else
    pass "the first-boot files are gone from the boot partition ($(findmnt -n -o FSTYPE /boot/firmware))"
fi
if [ -e /var/lib/edge-recorder/provision-error ]; then
    fail "provisioning left an error: $(cat /var/lib/edge-recorder/provision-error)"
fi

# --- the daemon and its watchdog ------------------------------------------------------------
daemon_active() { [ "$(prop edge-recorder.service ActiveState)" = active ]; }
if wait_for 300 daemon_active; then
    pass "edge-recorder.service is active (READY=1 after $(prop edge-recorder.service ExecMainStartTimestamp | cut -d' ' -f3) start)"
else
    fail "edge-recorder.service is $(prop edge-recorder.service ActiveState) after 300 s"
    finish
fi
watchdog=$(prop edge-recorder.service WatchdogUSec)
first_ping=$(prop edge-recorder.service WatchdogTimestampMonotonic)
pinged_again() { [ "$(prop edge-recorder.service WatchdogTimestampMonotonic)" != "$first_ping" ]; }
if [ "$watchdog" != 0 ] && [ "$watchdog" != infinity ] && wait_for 60 pinged_again; then
    pass "the watchdog is armed (WatchdogSec=$watchdog) and the daemon pings it"
else
    fail "no watchdog pings (WatchdogSec=$watchdog, last ping at $first_ping)"
fi

# --- the demo call --------------------------------------------------------------------------
# The call plays from the first read of the capture device: "*1" starts the recording, the
# caller's "#" ends it.
completed() {
    runuser -u edge-recorder -- "$CLI" recordings --config "$CONFIG" list --status completed --json \
        >/tmp/recordings.json 2>/tmp/recordings.err && grep -q '"end_on_key"' /tmp/recordings.json
}
if wait_for 300 completed; then
    # One line: id, status, end_reason, key, source, duration, size, encryption, media path.
    if summary=$(python3 -c '
import json, sys
(row,) = [r for r in json.load(open(sys.argv[1])) if r["end_reason"] == "end_on_key"]
print(row["id"], row["status"], row["end_reason"], row["key"], row["source"], "%.2f s" % row["duration"],
      row["size"], "bytes", "encrypted" if row["encryption"] else "plain", row["media_url"].removeprefix("file://"))
' /tmp/recordings.json); then
        pass "the demo call was recorded: ${summary% *}"
        media=${summary##* }
        if [ -s "$media" ] && ! grep -q RIFF "$media"; then
            pass "its media file $media is encrypted at rest ($(stat -c %s "$media") bytes)"
        else
            fail "its media file $media is missing or not encrypted"
        fi
    else
        fail "not one recording ended by the key: $(cat /tmp/recordings.json)"
    fi
else
    fail "no completed recording after 300 s: $(cat /tmp/recordings.err /tmp/recordings.json 2>/dev/null)"
fi

# --- still running, never restarted ---------------------------------------------------------
restarts=$(prop edge-recorder.service NRestarts)
if daemon_active && [ "$restarts" = 0 ]; then
    pass "edge-recorder.service still active, no restarts"
else
    fail "edge-recorder.service is $(prop edge-recorder.service ActiveState), restarted $restarts times"
fi
finish
