#!/usr/bin/env bash
# Installs what the distributed-mode tests, the local cluster and the browser
# test need, from Debian's packages, when it is missing: redis-server, a
# PostgreSQL server, and chromium (/usr/bin/chromium, driven by playwright-core
# in test/web; `--no-browser` leaves it out: the cluster and the fault suite do
# not use it). Nothing is started here; tests and the cluster start their own
# instances on free ports in temp folders.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ "${1:-}" != "--no-browser" ]; then
  [ -x /usr/bin/chromium ] || need+=(chromium)
fi
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != "0" ]; then
  echo "missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
  exit 1
fi
echo "installing ${need[*]} from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || true
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The Debian packages start system-wide servers; the project runs its own instances.
service redis-server stop >/dev/null 2>&1 || true
service postgresql stop >/dev/null 2>&1 || true
