#!/usr/bin/env bash
# One Redis transport against another, in one run: the library path (`redis_load load`, GCRA,
# 50 in flight, 10,000 keys, over-limit cache off) of two builds, alternating (ABBA), beside
# redis-benchmark EVALSHA of the peers' gcra.lua (50 connections, -P 16) on the same Redis.
#
#   A=/path/to/redis_load B=/path/to/redis_load [N=400000] [REPEAT=5] scripts/bench-transport.sh
#
# With TOPOLOGY=cluster, one build instead, on a standalone Redis and on a Cluster of 3 masters
# (no replicas) side by side, alternating (ABBA), the same workload; then a summary per
# topology: medians of decisions/s and of Redis CPU per decision (`INFO commandstats` usec of
# the script calls, summed over the Cluster's nodes, divided by decisions), and the per
# repetition ratios Cluster / standalone:
#
#   A=/path/to/redis_load TOPOLOGY=cluster [N=400000] [REPEAT=5] [CLUSTER_CONCURRENCY=50] \
#     scripts/bench-transport.sh
#
# CLUSTER_CONCURRENCY sets the Cluster side's calls in flight (150: as many per master as the
# standalone side has). Redis CPU is given twice: by commandstats, which times each call by the
# wall clock (so also counts time a process spent descheduled mid-call on a busy host), and by
# the redis-server processes' own CPU time (/proc/<pid>/stat, every command and the event loop);
# the client's CPU time (user + system, /usr/bin/time) is given beside them.
#
# CLIENT_ARGS adds arguments to every `redis_load load` (both sides, every mode), e.g.
# CLIENT_ARGS=--current-thread for a client on one thread.
#
# TOPOLOGY=sentinel does the same with `redis+sentinel://` (one Sentinel, one replica) against
# `redis://` of the same master; TOPOLOGY=tls with `rediss://` (a certificate made here by
# openssl) against `redis://` of the standalone server (both started alike).
#
# With REPLICA_ACK=N (builds mode), the standalone Redis gets one replica (synced before the
# first run) and both builds decide with `--replica-ack N` (every consuming decision waits for
# N replicas: `RedisOptions::replica_ack`, `WAIT` up to ACK_TIMEOUT_MS, 25 by default), and B
# once more without it (`B-plain`, on the same master and replica); each JSON line then also
# has the WAIT calls per decision:
#
#   A=/path/to/redis_load B=/path/to/redis_load REPLICA_ACK=1 [N=100000] scripts/bench-transport.sh
#
# Build each side with `cargo build --release -p tollgate-redis --bench redis_load` at its
# commit and copy target/release/deps/redis_load-<hash>. Prints JSON lines (one per run) and
# the redis-benchmark CSV lines; the peers' script comes from ../shared/peers when present.
set -euo pipefail
: "${A:?A=redis_load binary}"
TOPOLOGY=${TOPOLOGY:-builds}
[ "$TOPOLOGY" = builds ] && : "${B:?B=redis_load binary}"
N=${N:-400000}
REPEAT=${REPEAT:-5}
PEERS_GCRA=${PEERS_GCRA:-$(dirname "$0")/../../shared/peers/lua/gcra.lua}
# Extra `redis_load load` arguments, split on spaces (and not globbed).
read -r -a CLIENT <<<"${CLIENT_ARGS:-}"
RUN=$(mktemp -d)
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# Start a redis-server on a free port (its config: the arguments) and print the port; its pid
# goes to $RUN/redis-<port>.pid. Another port is tried when one was taken meanwhile.
start_redis() {
  local port
  for _ in 1 2 3 4 5; do
    port=$(free_port)
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
      --dir "$RUN" --pidfile "$RUN/redis-$port.pid" --logfile "$RUN/redis-$port.log" "$@"
    for _ in $(seq 50); do
      if redis-cli -p "$port" ping >/dev/null 2>&1; then echo "$port"; return; fi
      sleep 0.1
    done
  done
  echo "redis-server did not start: $(tail -3 "$RUN/redis-$port.log")" >&2
  exit 1
}
trap 'for p in "$RUN"/redis-*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; done; sleep 0.3; rm -rf "$RUN"' EXIT
PORT=$(start_redis)

if [ "$TOPOLOGY" != builds ]; then
  TLS_ARGS=()
  case $TOPOLOGY in
  cluster)
  NODES=()
  for _ in 1 2 3; do
    p=$(start_redis --cluster-enabled yes --cluster-config-file "nodes-$RANDOM$RANDOM.conf")
    NODES+=("127.0.0.1:$p")
  done
  redis-cli --cluster create "${NODES[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
  for _ in $(seq 100); do
    redis-cli -p "${NODES[0]#*:}" cluster info | grep -q 'cluster_state:ok' && break
    sleep 0.1
  done
  OTHER_URL="redis+cluster://$(IFS=,; echo "${NODES[*]}")"
  OTHER_PORTS=("${NODES[@]#*:}")
  ;;
  sentinel)
  start_redis --replicaof 127.0.0.1 "$PORT" >/dev/null
  SENTINEL=$(free_port)
  printf 'port %s\nbind 127.0.0.1\nsentinel monitor bench 127.0.0.1 %s 1\n' "$SENTINEL" "$PORT" >"$RUN/sentinel.conf"
  redis-server "$RUN/sentinel.conf" --sentinel --daemonize yes --pidfile "$RUN/redis-$SENTINEL.pid" \
    --logfile "$RUN/sentinel.log" --dir "$RUN"
  for _ in $(seq 50); do
    redis-cli -p "$SENTINEL" sentinel get-master-addr-by-name bench 2>/dev/null | grep -q "$PORT" && break
    sleep 0.1
  done
  OTHER_URL="redis+sentinel://127.0.0.1:$SENTINEL/bench"
  OTHER_PORTS=("$PORT")
  TLS_ARGS=(--stats-url "redis://127.0.0.1:$PORT")
  ;;
  tls)
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=bench-ca" \
    -keyout "$RUN/ca.key" -out "$RUN/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$RUN/server.key" \
    -out "$RUN/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$RUN/san.ext"
  openssl x509 -req -in "$RUN/server.csr" -CA "$RUN/ca.crt" -CAkey "$RUN/ca.key" -CAcreateserial \
    -days 1 -extfile "$RUN/san.ext" -out "$RUN/server.crt" 2>/dev/null
  TLS_PORT=$(free_port)
  TLS_PLAIN=$(free_port)
  redis-server --port "$TLS_PLAIN" --tls-port "$TLS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --tls-cert-file "$RUN/server.crt" --tls-key-file "$RUN/server.key" \
    --tls-ca-cert-file "$RUN/ca.crt" --tls-auth-clients no --daemonize yes --dir "$RUN" \
    --pidfile "$RUN/redis-$TLS_PORT.pid" --logfile "$RUN/redis-$TLS_PORT.log"
  sleep 0.5
  OTHER_URL="rediss://127.0.0.1:$TLS_PORT"
  OTHER_PORTS=("$TLS_PORT")
  TLS_ARGS=(--tls-ca "$RUN/ca.crt" --stats-url "redis://127.0.0.1:$TLS_PLAIN")
  ;;
  *) echo "TOPOLOGY: cluster, sentinel or tls" >&2; exit 2 ;;
  esac
  LINES="$RUN/lines.jsonl"
  # CPU time (clock ticks, user + system) the given ports' redis-server processes have used.
  cpu_ticks() {
    local total=0 port
    for port in "$@"; do
      read -r -a stat <"/proc/$(cat "$RUN/redis-$port.pid")/stat"
      total=$((total + stat[13] + stat[14]))
    done
    echo "$total"
  }
  for rep in $(seq "$REPEAT"); do
    order="standalone $TOPOLOGY"; [ $((rep % 2)) = 0 ] && order="$TOPOLOGY standalone"
    for side in $order; do
      url="redis://127.0.0.1:$PORT" ports=("$PORT") concurrency=50 extra=()
      if [ "$side" = "$TOPOLOGY" ]; then
        url=$OTHER_URL ports=("${OTHER_PORTS[@]}") concurrency=${CLUSTER_CONCURRENCY:-50}
        extra=("${TLS_ARGS[@]}")
      fi
      before=$(cpu_ticks "${ports[@]}")
      line=$(/usr/bin/time -f '%U %S' -o "$RUN/client-cpu" timeout 300 "$A" load "$url" \
        --algorithm gcra --concurrency "$concurrency" --requests "$N" --keys 10000 \
        --variant "$side rep$rep" "${extra[@]}" "${CLIENT[@]}")
      ticks=$(($(cpu_ticks "${ports[@]}") - before))
      redis_s=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f", t / hz }')
      client_s=$(awk '{ printf "%.3f", $1 + $2 }' "$RUN/client-cpu")
      echo "${line%\}},\"redis_process_cpu_s\":$redis_s,\"client_cpu_s\":$client_s}" | tee -a "$LINES"
    done
  done
  python3 - "$LINES" "$TOPOLOGY" <<'EOF'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    side, rep = r["variant"].split()
    usec = r["redis_usec_per_call"] * r["redis_calls_per_decision"]
    process = r["redis_process_cpu_s"] * 1e6 / r["decisions"]
    client = r["client_cpu_s"] * 1e6 / r["decisions"]
    runs.setdefault(rep, {})[side] = (r["rps"], usec, r["redis_calls_per_decision"], process, client)
med = lambda xs: statistics.median(xs)
other = sys.argv[2]
for side in ("standalone", other):
    rows = [reps[side] for reps in runs.values()]
    print(f"{side:10}  {med([r[0] for r in rows]):9.0f} decisions/s  "
          f"{med([r[1] for r in rows]):6.2f} µs commandstats CPU/decision  "
          f"{med([r[3] for r in rows]):6.2f} µs process CPU/decision  "
          f"{med([r[4] for r in rows]):6.2f} µs client CPU/decision  "
          f"{med([r[2] for r in rows]):.3f} script calls/decision")
ratios = [[reps[other][i] / reps["standalone"][i] for i in (0, 1, 3, 4)] for reps in runs.values()]
for i, name in enumerate(("rate", "commandstats CPU/decision", "process CPU/decision",
                          "client CPU/decision")):
    print(f"{other}/standalone {name}: " + " ".join(f"{r[i]:.2f}" for r in ratios)
          + f" (median {med([r[i] for r in ratios]):.2f})")
EOF
  exit 0
fi

# WAIT calls the standalone server has run.
wait_calls() {
  redis-cli -p "$PORT" info commandstats | sed -n 's/^cmdstat_wait:calls=\([0-9]*\).*/\1/p' | grep . || echo 0
}
ACK_ARGS=()
if [ -n "${REPLICA_ACK:-}" ]; then
  REPLICA=$(start_redis --replicaof 127.0.0.1 "$PORT" --repl-diskless-sync-delay 0)
  for _ in $(seq 100); do
    redis-cli -p "$REPLICA" info replication | grep -q 'master_link_status:up' && break
    sleep 0.1
  done
  # The master streams to a new replica from its first acknowledgement: wait until a write is
  # acknowledged (WAIT on the connection that wrote).
  for _ in $(seq 100); do
    [ "$(printf 'SET warm-up 1\nWAIT 1 100\n' | redis-cli -p "$PORT" | tail -1)" = 1 ] && break
  done
  ACK_ARGS=(--replica-ack "$REPLICA_ACK" --ack-timeout-ms "${ACK_TIMEOUT_MS:-25}")
fi
G=""
[ -f "$PEERS_GCRA" ] && G=$(redis-cli -p "$PORT" -x script load <"$PEERS_GCRA")
SIDES="A B"
# With REPLICA_ACK, B without it too (`B-plain`): what the acknowledgement costs.
[ -n "${REPLICA_ACK:-}" ] && SIDES="A B B-plain"
for rep in $(seq "$REPEAT"); do
  order=$SIDES; [ $((rep % 2)) = 0 ] && order=$(echo "$SIDES" | tr ' ' '\n' | tac | tr '\n' ' ')
  for side in $order; do
    binary=${side%-plain} args=("${ACK_ARGS[@]}")
    [ "$side" = B-plain ] && args=()
    waits=$(wait_calls)
    line=$(timeout 300 "${!binary}" load "redis://127.0.0.1:$PORT" --algorithm gcra --concurrency 50 \
      --requests "$N" --keys 10000 --variant "$side rep$rep" "${args[@]}" "${CLIENT[@]}")
    if [ -n "${REPLICA_ACK:-}" ]; then
      # WAIT calls per decision (the JSON's Redis calls are the script calls).
      line="${line%\}},\"wait_calls_per_decision\":$(awk -v w="$(($(wait_calls) - waits))" -v n="$N" 'BEGIN { printf "%.4f", w / n }')}"
    fi
    echo "$line"
  done
  if [ -n "$G" ]; then
    timeout 300 redis-benchmark -p "$PORT" --csv -c 50 -P 16 -n $((N * 2)) -r 10000 \
      evalsha "$G" 1 "gcra:a$rep:__rand_int__" 1000000 1000000 60 1 | tail -1 | sed "s/^/rb-P16 rep$rep /"
  fi
done
