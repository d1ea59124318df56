#!/usr/bin/env bash
# Install what the tests' loopback servers need and pip cannot provide: the XRootD server
# (`xrootd` from Debian's xrootd-server). Idempotent; never fails the build: without root or
# apt-get it says so and the XRootD tests skip themselves.
set -u

if command -v xrootd >/dev/null 2>&1; then
    echo "install-test-deps: xrootd found at $(command -v xrootd)"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: xrootd not found and not root; XRootD tests will be skipped" \
         "(install the 'xrootd-server' package to run them)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: xrootd not found and apt-get unavailable; XRootD tests will be skipped"
    exit 0
fi

echo "install-test-deps: installing xrootd-server with apt-get"
export DEBIAN_FRONTEND=noninteractive
if apt-get update -qq && apt-get install -y -qq --no-install-recommends xrootd-server >/dev/null
then
    echo "install-test-deps: installed $(command -v xrootd)"
else
    echo "install-test-deps: apt-get could not install xrootd-server; XRootD tests will be skipped"
fi
exit 0
