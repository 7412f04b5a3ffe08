#!/usr/bin/env bash
# Builds the Dockerfile for real with podman and runs the image: the base
# image is made locally (debootstrap --variant=minbase bookworm, podman
# import, tagged debian:bookworm-slim; no registry is reachable), the build
# uses --pull=never, and the container runs with --network host on free
# loopback ports. A client calls it; then SIGTERM (podman stop) must drain
# the server, PID 1 in the container, and exit 0.
# Usage: tests/container_test.sh [BIN_DIR]   (BIN_DIR holds mod-client; default build/bin)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/bin}
work=$(mktemp -d /var/tmp/modserve-container.XXXXXX)
name=modserve-test-$$
cleanup() {
  podman rm -f "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

need=()
for p in podman runc debootstrap uidmap; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  echo "container test: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# crun fails on this kind of machine's hybrid cgroup layout, and podman's
# default ulimits exceed the machine's.
cat >"$work/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
CONF
export CONTAINERS_CONF="$work/containers.conf"

if ! podman image exists debian:bookworm-slim; then
  echo "== base image: debootstrap bookworm (minbase)"
  debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log"; exit 1; }
  tar -C "$work/rootfs" -c . | podman import - debian:bookworm-slim >/dev/null
  rm -rf "$work/rootfs"
fi

echo "== podman build"
start=$(date +%s)
podman build --pull=never -t modserve:test . >"$work/build.log" 2>&1 || { tail -40 "$work/build.log"; exit 1; }
echo "built in $(($(date +%s) - start)) s; image $(podman image inspect modserve:test --format '{{.Size}}') bytes"

free_port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
grpc_port=$(free_port)
metrics_port=$(free_port)
podman run -d --name "$name" --network host modserve:test --config /etc/modserve/mod-server.yaml \
  --listen "127.0.0.1:$grpc_port" --metrics-listen "127.0.0.1:$metrics_port" >/dev/null
for _ in $(seq 1 120); do
  "$bin/mod-client" --server "127.0.0.1:$grpc_port" --timeout 2 health >/dev/null 2>&1 && break
  sleep 0.5
done
"$bin/mod-client" --server "127.0.0.1:$grpc_port" health
"$bin/mod-client" --server "127.0.0.1:$grpc_port" generate --prompt "The jury said " --max-tokens 24 | tee "$work/out.txt"
[[ $(wc -c <"$work/out.txt") -gt 0 ]] || { echo "FAIL: empty completion"; exit 1; }
uid=$(podman exec "$name" id -u)
[[ "$uid" == 10001 ]] || { echo "FAIL: the server runs as uid $uid, not 10001"; exit 1; }
/usr/bin/python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5).read()' \
  "http://127.0.0.1:$metrics_port/metrics"

echo "== SIGTERM"
podman stop --time 30 "$name" >/dev/null
code=$(podman inspect "$name" --format '{{.State.ExitCode}}')
podman logs "$name" 2>&1 | tail -3
[[ "$code" == 0 ]] || { echo "FAIL: exit code $code after SIGTERM"; exit 1; }
echo "PASS: container (non-root, served, drained on SIGTERM, exit 0)"
