#!/bin/bash
# How long a fresh `make demo` spends setting up before the demo starts: venv creation and install,
# on a copy of this checkout's HEAD with empty download caches (as on a machine that never ran it).
# Prints wall and CPU seconds (CPU: this script's children, user + system). docs/benchmarks.md, "Set-up".
#   scripts/demo-setup-time.sh                       # what `make demo` installs
#   scripts/demo-setup-time.sh .venv/.installed      # what `make test` installs, for comparison
set -euo pipefail
target=${1:-.venv/.installed-demo}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git -C "$(dirname "$0")/.." archive HEAD | tar -x -C "$work/"
export UV_CACHE_DIR="$work/.uv-cache" PIP_CACHE_DIR="$work/.pip-cache"
start=$(date +%s.%N)
make -C "$work" --no-print-directory "$target" > "$work/make.log" 2>&1 || { cat "$work/make.log"; exit 1; }
end=$(date +%s.%N)
times > "$work/times"  # here, not in a subshell: the second line is this shell's children
cpu=$(tail -1 "$work/times" | awk '{ split($1, u, "m"); split($2, s, "m"); print u[1]*60 + u[2] + s[1]*60 + s[2] }')
load=$(cut -d' ' -f1-3 /proc/loadavg)
printf 'target %s: wall %.1f s, CPU %.1f s, load average at the end %s, %s cores\n' \
  "$target" "$(echo "$end - $start" | bc)" "$cpu" "$load" "$(nproc)"
