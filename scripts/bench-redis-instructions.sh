#!/usr/bin/env bash
# Instructions Redis spends per decision of tollgate's GCRA batch script, counted by callgrind
# (the Redis work itself: unlike CPU time, it does not depend on what else the host runs).
# A redis-server under valgrind gets the same batch, of BATCH checks on random identifiers out
# of 10,000 (none with an override), from redis-benchmark: CALLS calls unmeasured, then CALLS
# measured; the figure is the dump's total over CALLS x BATCH decisions.
#
#   scripts/bench-redis-instructions.sh standalone|cluster|peer BATCH [CALLS]
#
# `standalone` sends the batch form (`scripts/generated/gcra.batch.lua`, keys declared);
# `cluster` starts the server with cluster mode on, one master owning every slot, and sends the
# form a Cluster node's batch takes (`gcra.cross-slot.lua`, keys in ARGV): every per-call and
# per-key check of cluster mode is paid, as on a node of a larger Cluster. Compare the two at the
# batch sizes a load run reports (`redis_calls_per_decision` of scripts/bench-transport.sh is
# 1 / batch). `peer` is the baseline of issue 16's standalone target instead: the peers' GCRA
# script (../shared/peers/lua/gcra.lua, one decision per call, as redis-benchmark sends it
# there), CALLS x BATCH calls pipelined BATCH deep over 50 connections (BATCH 16: `-P 16`),
# and the figure is per call. (tollgate's batches come over 4 connections here, as a load run
# sends them over one to four; the peer's over 50, as the target's baseline sends them.) Needs valgrind, redis-server, redis-cli, redis-benchmark.
set -euo pipefail
MODE=${1:?standalone, cluster or peer}
case $MODE in standalone | cluster | peer) ;; *) echo "MODE: standalone, cluster or peer" >&2; exit 2 ;; esac
BATCH=${2:?checks per call}
CALLS=${3:-400}
SCRIPTS=$(cd "$(dirname "$0")/../crates/tollgate-redis/scripts/generated" && pwd)
RUN=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
CLUSTER=()
[ "$MODE" = cluster ] && CLUSTER=(--cluster-enabled yes --cluster-config-file "$RUN/nodes.conf")
valgrind --tool=callgrind --callgrind-out-file="$RUN/callgrind.out" redis-server --port "$PORT" \
  --bind 127.0.0.1 --save "" --appendonly no --dir "$RUN" "${CLUSTER[@]}" >"$RUN/valgrind.log" 2>&1 &
VALGRIND=$!
trap 'kill $VALGRIND 2>/dev/null && wait $VALGRIND 2>/dev/null; rm -rf "$RUN"' EXIT
for _ in $(seq 300); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.2; done
KEYS=() ARGS=()
for _ in $(seq "$BATCH"); do
  KEYS+=("tollgate:cgb:gcra:{__rand_int__}" "tollgate:cgb:override:{__rand_int__}")
  ARGS+=(1 1000000 60000000 1000000)
done
BENCH=(-c 4) PIPELINE=1
if [ "$MODE" = peer ]; then
  PEERS_GCRA=${PEERS_GCRA:-$(dirname "$0")/../../shared/peers/lua/gcra.lua}
  [ -f "$PEERS_GCRA" ] || { echo "no peers' script at $PEERS_GCRA (set PEERS_GCRA)" >&2; exit 1; }
  SHA=$(redis-cli -p "$PORT" -x script load <"$PEERS_GCRA")
  CALL=(evalsha "$SHA" 1 "gcra:cgb:__rand_int__" 1000000 1000000 60 1)
  PIPELINE=$BATCH BENCH=(-c 50 -P "$BATCH")
  CALLS=$((CALLS * BATCH)) BATCH=1
elif [ "$MODE" = cluster ]; then
  redis-cli -p "$PORT" cluster addslotsrange 0 16383 >/dev/null
  for _ in $(seq 150); do
    redis-cli -p "$PORT" cluster info | grep -q cluster_state:ok && break
    sleep 0.2
  done
  SHA=$(redis-cli -p "$PORT" -x script load <"$SCRIPTS/gcra.cross-slot.lua")
  CALL=(evalsha "$SHA" 0 $((2 * BATCH)) "${KEYS[@]}" "${ARGS[@]}")
else
  SHA=$(redis-cli -p "$PORT" -x script load <"$SCRIPTS/gcra.batch.lua")
  CALL=(evalsha "$SHA" $((2 * BATCH)) "${KEYS[@]}" "${ARGS[@]}")
fi
# A reply that is not six doubles per check (the peer's: three integers) would be an error
# counted as an answer.
if [ "$MODE" = peer ]; then
  REPLY=$(redis-cli -p "$PORT" "${CALL[@]//__rand_int__/probe}")
  [ "$(echo "$REPLY" | wc -l)" = 3 ] || { echo "the script answered: $REPLY" >&2; exit 1; }
else
  REPLY=$(redis-cli -p "$PORT" "${CALL[@]//__rand_int__/probe}" | wc -c)
  [ "$REPLY" -ge $((48 * BATCH)) ] || { echo "the script answered an error" >&2; exit 1; }
fi
redis-benchmark -p "$PORT" "${BENCH[@]}" -r 10000 -n "$CALLS" "${CALL[@]}" >/dev/null
callgrind_control -z "$VALGRIND" >/dev/null 2>&1
redis-benchmark -p "$PORT" "${BENCH[@]}" -r 10000 -n "$CALLS" "${CALL[@]}" >/dev/null
callgrind_control -d "$VALGRIND" >/dev/null 2>&1
TOTAL=$(callgrind_annotate "$RUN/callgrind.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
echo "{\"mode\":\"$MODE\",\"batch\":$BATCH,\"pipeline\":$PIPELINE,\"calls\":$CALLS,\"instructions_per_decision\":$((TOTAL / (CALLS * BATCH)))}"
