#!/usr/bin/env bash
# Install Debian's `prometheus` package (prometheus + promtool) when it is missing, for
# tests/test_prometheus_live.py. Never fails the build: where it cannot install (no
# apt-get, not root and no password-less sudo, no network), it says why and exits 0, and
# the live test skips with the same reason.
set -u

say() { echo "install-prometheus: $*"; }

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    say "already installed: $(prometheus --version 2>&1 | head -n 1)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    say "cannot install: no apt-get on this machine (the Prometheus test will skip)"
    exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        say "cannot install: not root and no password-less sudo (the Prometheus test will skip)"
        exit 0
    fi
fi

# The package's post-install script would start a system Prometheus on :9090. The test
# runs its own binary on a free port, so keep services from starting while installing:
# policy-rc.d answering 101 is Debian's way to say "do not start anything".
POLICY=/usr/sbin/policy-rc.d
ADDED_POLICY=0
if [ ! -e "$POLICY" ]; then
    if printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null 2>&1 \
        && "${SUDO[@]}" chmod 755 "$POLICY"; then
        ADDED_POLICY=1
    fi
fi
cleanup() {
    if [ "$ADDED_POLICY" -eq 1 ]; then
        "${SUDO[@]}" rm -f "$POLICY"
    fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
say "installing Debian's prometheus package"
if ! timeout 300 "${SUDO[@]}" apt-get update -q >/dev/null; then
    say "apt-get update failed or timed out; trying the install with the lists at hand"
fi
if ! timeout 600 "${SUDO[@]}" apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold prometheus; then
    say "cannot install: apt-get install prometheus failed (the Prometheus test will skip)"
    exit 0
fi

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    say "installed: $(prometheus --version 2>&1 | head -n 1)"
else
    say "installed the package, but prometheus/promtool are not on PATH"
fi
exit 0
