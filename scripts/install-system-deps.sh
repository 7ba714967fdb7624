#!/usr/bin/env bash
# Installs the system packages the test suite needs, when they are missing:
#   chromium + chromium-driver  (browser tests of the dashboards, driven by Playwright)
#   kcat                        (checks that a stock Kafka client works with the embedded broker)
#   mosquitto-clients           (the MQTT example the provisioning page shows, run as shown)
# Set WORKBENCH_SKIP_SYSTEM_DEPS=1 to skip (the tests that need them then fail and say why).
set -euo pipefail

[ "${WORKBENCH_SKIP_SYSTEM_DEPS:-0}" = 1 ] && { echo "system-deps: skipped (WORKBENCH_SKIP_SYSTEM_DEPS=1)"; exit 0; }

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: error: missing ${missing[*]} and no apt-get here; install them with your package manager" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "system-deps: error: missing ${missing[*]}; run 'sudo apt-get install ${missing[*]}' (or make test as root)" >&2
    exit 1
  fi
fi
echo "system-deps: installing ${missing[*]} …"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "system-deps: installed ${missing[*]}"
