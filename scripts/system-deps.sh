#!/usr/bin/env bash
# Debian packages some tests need, installed when missing (as root; otherwise say what is missing).
#   /usr/bin/etcd      etcd-server 3.4: the multi-member HA test (etcd 3.5.0-3.5.2 lose writes there;
#                      .venv/bin/etcd is the wheel's 3.5.1, hence the explicit path)
#   systemd-analyze    systemd: the units in systemd/ are verified
#   chromium, chromedriver   the admin API's web page is tested in headless Chromium
#   redis-server, redis-sentinel, redis-cli   examples/redis runs the real Redis in simulator VMs
#   go                 bench/peers.py builds confd and Go metad from source; its tests build a broken tree
#   zookeeper          the agent's zookeeper backend is tested against a real ZooKeeper (pulls a JRE)
#   python3, curl      the AppCenter sandbox e2e test's image runs Debian's python3 and curl in the VM
#   gcc, libc6-dev     the simulator compiles its sandboxed VMs' address library at first use
set -euo pipefail
missing=()
[ -x /usr/bin/etcd ] || missing+=(etcd-server)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
[ -x /usr/bin/redis-server ] || missing+=(redis-server)
[ -x /usr/bin/redis-sentinel ] || missing+=(redis-sentinel)
command -v go >/dev/null || missing+=(golang-go)
[ -f /usr/share/java/zookeeper.jar ] || missing+=(zookeeper)
[ -x /usr/bin/python3 ] || missing+=(python3)
[ -x /usr/bin/curl ] || missing+=(curl)
command -v cc >/dev/null || missing+=(gcc)
[ -f /usr/include/stdio.h ] || missing+=(libc6-dev)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: missing Debian packages: ${missing[*]}" >&2
    echo "system-deps: as root, run: apt-get install -y ${missing[*]} (tests that need them will fail)" >&2
    exit 0
fi
echo "system-deps: installing ${missing[*]}"
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
