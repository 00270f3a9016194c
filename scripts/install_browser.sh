#!/usr/bin/env bash
# Installs Debian's chromium for the real-browser test (tests/test_browser.py) when it is missing.
# Playwright cannot download its own browser here, so the test drives the system chromium.
# Always exits 0: where installing is impossible it prints why, writes the reason to
# test-artifacts/browser-install.txt, and the browser test is skipped with that reason.
set -u
cd "$(dirname "$0")/.." || exit 0
mkdir -p test-artifacts
REASON_FILE=test-artifacts/browser-install.txt

explain() {  # the reason the browser test will be skipped
    echo "install_browser: $1"
    echo "$1" > "$REASON_FILE"
    exit 0
}

for candidate in "${CHROMIUM:-}" /usr/bin/chromium "$(command -v chromium 2>/dev/null)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
        echo "install_browser: chromium present at $candidate"
        rm -f "$REASON_FILE"
        exit 0
    fi
done

command -v apt-get >/dev/null 2>&1 || explain "chromium is missing and apt-get is not available (not a Debian-like system)"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        explain "chromium is missing and installing it needs root (run: sudo apt-get install -y chromium)"
    fi
fi

echo "install_browser: installing chromium with apt-get (a few minutes the first time)"
LOG=test-artifacts/browser-install.log
if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$LOG" 2>&1; then
    explain "apt-get update failed (no network to the package mirror?); see $LOG"
fi
if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >>"$LOG" 2>&1; then
    explain "apt-get install chromium failed; see $LOG"
fi
[ -x /usr/bin/chromium ] || explain "apt-get installed chromium but /usr/bin/chromium is missing"
rm -f "$REASON_FILE"
echo "install_browser: chromium installed at /usr/bin/chromium"
exit 0
