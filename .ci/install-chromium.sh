#!/usr/bin/env bash
# Installs the Debian chromium package, which the console's browser tests
# drive; does nothing when it is there already. Run as root (CI) or with
# sudo available.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  sudo="sudo"
fi
echo "installing chromium for the console's browser tests (apt-get install chromium)"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
/usr/bin/chromium --version 2>/dev/null || true
