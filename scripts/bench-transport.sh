#!/usr/bin/env bash
# One Redis transport against another, in one run: the library path (`redis_load load`, GCRA,
# 50 in flight, 10,000 keys, over-limit cache off) of two builds, alternating (ABBA), beside
# redis-benchmark EVALSHA of the peers' gcra.lua (50 connections, -P 16) on the same Redis.
#
#   A=/path/to/redis_load B=/path/to/redis_load [N=400000] [REPEAT=5] scripts/bench-transport.sh
#
# Build each side with `cargo build --release -p tollgate-redis --bench redis_load` at its
# commit and copy target/release/deps/redis_load-<hash>. Prints JSON lines (one per run) and
# the redis-benchmark CSV lines; the peers' script comes from ../shared/peers when present.
set -euo pipefail
: "${A:?A=redis_load binary}" "${B:?B=redis_load binary}"
N=${N:-400000}
REPEAT=${REPEAT:-5}
PEERS_GCRA=${PEERS_GCRA:-$(dirname "$0")/../../shared/peers/lua/gcra.lua}
RUN=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --pidfile "$RUN/redis.pid" --logfile "$RUN/redis.log"
trap 'kill "$(cat "$RUN/redis.pid")" 2>/dev/null; rm -rf "$RUN"' EXIT
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
G=""
[ -f "$PEERS_GCRA" ] && G=$(redis-cli -p "$PORT" -x script load <"$PEERS_GCRA")
for rep in $(seq "$REPEAT"); do
  order="A B"; [ $((rep % 2)) = 0 ] && order="B A"
  for side in $order; do
    timeout 300 "${!side}" load "redis://127.0.0.1:$PORT" --algorithm gcra --concurrency 50 \
      --requests "$N" --keys 10000 --variant "$side rep$rep"
  done
  if [ -n "$G" ]; then
    timeout 300 redis-benchmark -p "$PORT" --csv -c 50 -P 16 -n $((N * 2)) -r 10000 \
      evalsha "$G" 1 "gcra:a$rep:__rand_int__" 1000000 1000000 60 1 | tail -1 | sed "s/^/rb-P16 rep$rep /"
  fi
done
