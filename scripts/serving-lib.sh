# shellcheck shell=bash disable=SC2034  # sets variables for the scripts that source it
# Sourced by the serving benchmarks (bench-server.sh, bench-prefix-cache.sh,
# bench-priority.sh): a work directory removed at exit, mod-server on free
# loopback ports, and its metrics.
# Run from the repository root, after scripts/build.sh.
work=$(mktemp -d)
server=""
trap 'if [[ -n "$server" ]]; then kill "$server" 2>/dev/null || true; fi; rm -rf "$work"' EXIT

# start_server [mod-server flags]: starts it, waits until it listens; sets
# server (its pid), grpc_port and metrics_port. Its stderr: $work/server.log.
start_server() {
  build/bin/mod-server --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 "$@" 2>"$work/server.log" &
  server=$!
  for _ in $(seq 1 300); do grep -q '(port [0-9]*)' "$work/server.log" && break; sleep 0.1; done
  grpc_port=$(grep -o '(port [0-9]*)' "$work/server.log" | head -1 | tr -dc 0-9)
  metrics_port=$(grep -o '(port [0-9]*)' "$work/server.log" | tail -1 | tr -dc 0-9)
  if [[ -z "$grpc_port" ]]; then
    echo "mod-server did not start:" >&2
    cat "$work/server.log" >&2
    return 1
  fi
}

# stop_server: SIGTERM (the server drains), then waits for it.
stop_server() {
  kill -TERM "$server"
  wait "$server"
  server=""
}

median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# One metric's value from the server's /metrics (bash's /dev/tcp: no curl needed).
metric() {
  local text
  exec 3<>"/dev/tcp/127.0.0.1/$1"
  printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
  text=$(cat <&3)
  exec 3<&-
  awk -v name="$2" '$1 == name {print $2}' <<<"$text"
}
