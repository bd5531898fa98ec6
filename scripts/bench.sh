#!/usr/bin/env bash
# The whole speed comparison of tollgate, in one run on this machine, as one table.
#
#   scripts/bench.sh                 # REPEAT=3: under 10 minutes once everything is built
#   REPEAT=1 scripts/bench.sh        # a quick pass (about 3 minutes)
#   PARTS=redis,http scripts/bench.sh
#
# Parts (PARTS, comma-separated; default all):
#   core        criterion: tollgate memory store vs governor's keyed limiter, 10,000 String keys,
#               1 and 2 threads (cargo bench -p tollgate --bench core -- keyed_10k)
#   redis       tollgate bench --store redis://… (the library path, in-process) at 1, 16, 64 and
#               50 in flight, each beside redis-benchmark EVALSHA of tollgate's own script at the
#               same concurrency (-P 1), plus -P 16 with 50 clients; Redis commands per decision
#               (MONITOR); the Rust peers and rate-limiter-flexible / Python limits on the same
#               Redis when ../shared/peers has them built
#   algorithms  Redis CPU per decision for each algorithm (INFO commandstats usec_per_call and
#               INFO cpu), beside the peers' own Lua scripts
#   flood       the over-limit flood: every key exhausted first, then rejections with tollgate's
#               over-limit cache (no Redis call) and without it, beside rate-limiter-flexible
#               (inMemoryBlockOnConsumed) and Limitador's cached storage
#   accuracy    3 processes x 32 in flight on one key, limit 100: exactly 100 must pass
#   http        tollgate serve (memory store, Redis) with wrk -t2 -c50 beside the HTTP floor
#               (a fixed-answer axum handler) and throttlecrab-server, and the memory store
#               with `stats: false` (what live stats cost)
#   grpc        one tollgate serve (memory store) with the HTTP API and the Envoy rate limit service
#               (gRPC), the same GCRA limit on both; tollgate bench --http, --grpc (its default:
#               one HTTP/2 connection per core, as Envoy's workers) and --grpc
#               --grpc-connections 1 at 64 in flight, alternating; the server's CPU
#               (utime+stime of its process) and the client's per decision
#   callgrind   instructions per decision (stable across noisy runs): the memory store and
#               Limiter::check beside governor, the Redis store's client side, the HTTP servers'
#               user space per request (tollgate serve, the floor, throttlecrab), and
#               redis-server running each algorithm's script and the peers' scripts
#
# Everything binds 127.0.0.1. A private redis-server on a free port is stopped by its pid on
# exit, as are the servers started here. Each command has a timeout; no repetition starts when
# it would pass BUDGET_S. Contenders alternate within each repetition, so drift on this shared
# machine hits them alike: compare ratios from the same run, not absolute numbers.
#
# Knobs: REPEAT=3 BUDGET_S=480 PARTS=... PEERS_DIR=../shared/peers REQUESTS=150000 DUR=5
#        OUT=bench/results/<UTC stamp>
# Output: $OUT/results.jsonl (one line per measurement), $OUT/table.md (printed at the end),
#         $OUT/env.txt (machine, versions, load), $OUT/raw/ (every tool's output).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T0=$(date +%s)

REPEAT=${REPEAT:-3}
BUDGET_S=${BUDGET_S:-480}
PARTS=${PARTS:-core,redis,algorithms,flood,accuracy,http,grpc,callgrind}
PEERS_DIR=$(cd "${PEERS_DIR:-$ROOT/../shared/peers}" 2>/dev/null && pwd || true)
REQUESTS=${REQUESTS:-150000}
DUR=${DUR:-5}
KEYS=10000
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$ROOT/bench/results/$STAMP}
RAW=$OUT/raw
JSONL=$OUT/results.jsonl
mkdir -p "$RAW"
: >"$JSONL"

log() { printf '[%4ds] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
has_part() { [[ ",$PARTS," == *",$1,"* ]]; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
summarize() { python3 "$ROOT/bench/summarize.py" "$@"; }

# ---------------------------------------------------------------- machine, load, versions
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), $(uname -r)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "busiest processes at start:"
  ps -eo pcpu,comm --sort=-pcpu | sed -n '2,6p' | sed 's/^/  /'
  echo "tollgate: $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "$(rustc --version); $(redis-server --version | cut -d' ' -f1-3); $(redis-benchmark --version)"
  command -v wrk >/dev/null && echo "$(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
  command -v node >/dev/null && echo "node $(node --version)"
  echo "python $(python3 --version 2>&1 | cut -d' ' -f2)"
} >"$OUT/env.txt"
sed 's/^/  /' "$OUT/env.txt" >&2
if ps -eo comm | grep -qE '^(rustc|cc1plus|cargo)$'; then
  log "warning: compilers are running on this machine now; figures will be noisy (compare ratios)"
fi

# ---------------------------------------------------------------- build (not part of the timing)
log "building (release): tollgate, the redis_load bench (tollgate's script), the core bench"
timeout 1800 cargo build --release --quiet -p tollgate-server --bin tollgate
TOLLGATE=$ROOT/target/release/tollgate
bench_exe() { # package bench-name -> path of the built criterion/bench executable
  timeout 1800 cargo bench --quiet -p "$1" --bench "$2" --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$2" | tail -1
}
REDIS_LOAD=$(bench_exe tollgate-redis redis_load)
CORE_BENCH="" KEYED_LOOP=""
has_part core && CORE_BENCH=$(bench_exe tollgate core)
if { has_part callgrind || has_part core; } && timeout 1800 cargo build --release --quiet -p tollgate --example keyed_loop; then
  KEYED_LOOP=$ROOT/target/release/examples/keyed_loop
fi
T_BUILT=$(date +%s)
log "built in $((T_BUILT - T0)) s; the timed budget ($BUDGET_S s) starts now"

# ---------------------------------------------------------------- what the peers folder has built
FLOOR_BIN="" TC_BIN="" RUST_PEERS="" NODE_OK="" PY=""
if [ -n "$PEERS_DIR" ]; then
  [ -x "$PEERS_DIR/http-floor/axum-floor/target/release/axum-floor" ] && FLOOR_BIN=$PEERS_DIR/http-floor/axum-floor/target/release/axum-floor
  [ -x "$PEERS_DIR/http-floor/tc/bin/throttlecrab-server" ] && TC_BIN=$PEERS_DIR/http-floor/tc/bin/throttlecrab-server
  [ -x "$PEERS_DIR/rust-peers/target/release/rust-peers" ] && RUST_PEERS=$PEERS_DIR/rust-peers/target/release/rust-peers
  [ -d "$PEERS_DIR/node/node_modules" ] && command -v node >/dev/null && NODE_OK=1
  [ -x "$PEERS_DIR/py/.venv/bin/python" ] && PY=$PEERS_DIR/py/.venv/bin/python
fi
missing=()
[ -n "$FLOOR_BIN" ] || missing+=("axum floor (cd $PEERS_DIR/http-floor && cargo build --release --manifest-path axum-floor/Cargo.toml)")
[ -n "$TC_BIN" ] || missing+=("throttlecrab-server (apt-get install protobuf-compiler; cd $PEERS_DIR/http-floor && cargo install throttlecrab-server --version 0.4.40 --locked --root tc)")
[ -n "$RUST_PEERS" ] || missing+=("rust-peers (apt-get install libclang-dev clang; cd $PEERS_DIR/rust-peers && CARGO_TARGET_DIR=\$PWD/target cargo build --release; about 16 min cold)")
[ -n "$NODE_OK" ] || missing+=("rate-limiter-flexible (cd $PEERS_DIR/node && npm ci)")
[ -n "$PY" ] || missing+=("python limits (cd $PEERS_DIR/py && python3 -m venv .venv && .venv/bin/pip install -r requirements.txt)")
command -v wrk >/dev/null || missing+=("wrk (apt-get install wrk)")
for m in "${missing[@]}"; do log "skipped, not built: $m"; done
if [ "${#missing[@]}" -gt 0 ]; then printf 'skipped (not built): %s\n' "${missing[@]}" >>"$OUT/env.txt"; fi

# ---------------------------------------------------------------- private Redis, servers, cleanup
PIDS=()
RUN=$(mktemp -d)
REDIS_PORT=$(free_port)
REDIS_URL=redis://127.0.0.1:$REDIS_PORT
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -f "$RUN/redis.pid" ]; then
    local rp
    rp=$(cat "$RUN/redis.pid")
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    sleep 0.2
    kill -0 "$rp" 2>/dev/null && kill "$rp" 2>/dev/null || true
  fi
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --dir "$RUN" --pidfile "$RUN/redis.pid" --logfile "$RUN/redis.log"
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
log "private Redis on 127.0.0.1:$REDIS_PORT (pid $(cat "$RUN/redis.pid"))"
rcli() { timeout 30 redis-cli -p "$REDIS_PORT" "$@"; }

# tollgate's own scripts (one per algorithm for one-policy checks), each loaded under its SHA
# (exactly what RedisStore sends); `redis_load sha ALGORITHM` prints the SHA it uses.
declare -A SHAS
for algo in gcra token-bucket fixed-window sliding-window sliding-log; do
  "$REDIS_LOAD" script "$algo" >"$RUN/tollgate-$algo.lua"
  SHAS[$algo]=$(rcli -x script load <"$RUN/tollgate-$algo.lua")
  [ "${SHAS[$algo]}" = "$("$REDIS_LOAD" sha "$algo")" ] || { log "script SHA mismatch ($algo)"; exit 1; }
  # redis-benchmark counts an error reply as an answer: make sure the arguments below (a state
  # key and an override key per check) still make a decision, not an error.
  if rcli evalsha "${SHAS[$algo]}" 2 "tollgate:probe:$algo:{k}" "tollgate:probe:override:{k}" 1 1000 60000000 1000 2>&1 | grep -q ERR; then
    log "tollgate's $algo script refuses the benchmark's arguments"; exit 1
  fi
done
SHA=${SHAS[gcra]}
"$REDIS_LOAD" script several >"$RUN/tollgate-several.lua"
TG=("$TOLLGATE" bench --store "$REDIS_URL" --json --duration 20s)
RB=(redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" --csv)
peer_env=(env REDIS_HOST=127.0.0.1 REDIS_PORT="$REDIS_PORT")
# allow-path limits: 1e6 per minute, except the sliding log (one entry per instant: at most 1e5)
limit_of() { if [ "$1" = sliding-log ]; then echo 100000; else echo 1000000; fi; }

# utime+stime of a process, in clock ticks (/proc/PID/stat fields 14 and 15)
proc_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

# ---------------------------------------------------------------- measuring one thing
SEQ=0
REP=1
# measure KIND SECTION CONTENDER VARIANT TIMEOUT_S [--redis] [--cpu PID] [--requests N] [--extra K V]... -- CMD...
# Runs CMD under `timeout`, keeps its output in $RAW, and appends one JSON line to $JSONL.
# --redis: read INFO cpu and commandstats of the private Redis before and after.
# --cpu PID: the CPU time of process PID (a server) and of CMD (the client) around the run.
measure() {
  local kind=$1 section=$2 who=$3 variant=$4 limit=$5
  shift 5
  local redis="" requests="" extra=() cpu_pid=""
  while [ "$1" != "--" ]; do
    case $1 in
      --redis) redis=1; shift ;;
      --cpu) cpu_pid=$2; shift 2 ;;
      --requests) requests=$2; shift 2 ;;
      --extra) extra+=(--extra "$2" "$3"); shift 3 ;;
      *) log "measure: unknown option $1"; return 1 ;;
    esac
  done
  shift
  SEQ=$((SEQ + 1))
  local raw
  raw=$RAW/$(printf '%03d' "$SEQ")-$(printf '%s-%s' "$who" "$variant" | tr -c 'A-Za-z0-9._-' '_' | head -c 80).txt
  if [ -n "$redis" ]; then { rcli info cpu; rcli info commandstats; } >"$raw.before"; fi
  local rc=0 ticks0=""
  if [ -n "$cpu_pid" ]; then ticks0=$(proc_ticks "$cpu_pid"); fi
  if [ -n "$cpu_pid" ]; then
    # -o: the client's user and system seconds, apart from its output
    timeout "$limit" /usr/bin/time -f '%U %S' -o "$raw.time" "$@" >"$raw" 2>"$raw.err" || rc=$?
    echo "$ticks0 $(proc_ticks "$cpu_pid") $(getconf CLK_TCK) $(cat "$raw.time" 2>/dev/null | tail -1)" >"$raw.cpu"
  else
    timeout "$limit" "$@" >"$raw" 2>"$raw.err" || rc=$?
  fi
  if [ -n "$redis" ]; then { rcli info cpu; rcli info commandstats; } >"$raw.after"; fi
  local args=(--kind "$kind" --section "$section" --contender "$who" --variant "$variant" --rep "$REP" --rc "$rc" --raw "$raw")
  if [ -n "$requests" ]; then args+=(--requests "$requests"); fi
  if summarize record "${args[@]}" "${extra[@]}" >>"$JSONL" 2>>"$raw.err"; then
    log "  $section | $who | $variant: $(summarize brief "$(tail -1 "$JSONL")")"
  else
    log "  $section | $who | $variant: FAILED (exit $rc), see $raw.err"
  fi
}
# ---------------------------------------------------------------- the parts, one repetition
part_core() {
  [ -n "$CORE_BENCH" ] || return 0
  local home=$RAW/criterion-$REP
  # CRITERION_HOME keeps this run's estimates apart from anyone else's target/criterion; even
  # repetitions measure the contenders in the reverse order (KEYED_ORDER, benches/core.rs).
  local order=forward
  [ $((REP % 2)) = 0 ] && order=reversed
  if ! KEYED_ORDER=$order CRITERION_HOME=$home timeout 240 "$CORE_BENCH" --bench keyed_10k --noplot >"$RAW/criterion-$REP.txt" 2>&1; then
    log "  core: criterion failed, see $RAW/criterion-$REP.txt"
    return 0
  fi
  summarize record --kind criterion --section core --contender "" --variant "" --rep "$REP" --raw "$home" |
    python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    who, threads = r["variant"].strip().rsplit("/", 1)   # "governor/1t"
    r["contender"], r["variant"] = who, f"keyed 10k, {threads}"
    if who != "governor":
        r["ratio_to"] = f"core|governor|keyed 10k, {threads}|governor"
    print(json.dumps(r))' >>"$JSONL"
  log "  core: $(grep '"section": "core"' "$JSONL" | grep -c "\"rep\": $REP") criterion rows"
  # The same two contenders in one process, in 40 alternating bursts of 1,000,000 checks (ABBA):
  # drift on the shared machine hits both alike (examples/keyed_loop.rs, `alternate`).
  if [ -n "$KEYED_LOOP" ]; then
    timeout 300 "$KEYED_LOOP" alternate 1000000 2>"$RAW/alternate-$REP.err" | REP=$REP python3 -c '
import json, os, sys
for line in sys.stdin:
    r = json.loads(line)
    row = {"section": "core", "contender": r["who"] + " (alternating bursts)", "variant": "keyed 10k, 1t",
           "rep": int(os.environ["REP"]), "rps": r["rps"]}
    if r["who"] != "governor":
        row["ratio_to"] = "core|governor (alternating bursts)|keyed 10k, 1t|governor"
    print(json.dumps(row))' >>"$JSONL" || log "  core: keyed_loop alternate failed"
    log "  core: alternating bursts: $(cat "$RAW/alternate-$REP.err")"
  fi
}

part_redis() {
  local c n
  for c in 1 16 64 50; do
    n=$REQUESTS
    [ "$c" = 1 ] && n=$((REQUESTS / 10))
    measure tollgate redis "tollgate (library, Redis store)" "c$c" 60 --redis --requests "$n" \
      --extra ratio_to "redis|redis-benchmark EVALSHA tollgate script|c$c -P 1|redis-benchmark" -- \
      "${TG[@]}" --concurrency "$c" --requests "$n" --variant "c$c"
    measure rb redis "redis-benchmark EVALSHA tollgate script" "c$c -P 1" 60 --redis --requests "$n" -- \
      "${RB[@]}" -c "$c" -P 1 -n "$n" -r $KEYS evalsha "$SHA" 2 "tollgate:rb:gcra:{__rand_int__}" "tollgate:rb:override:{__rand_int__}" 1 1000000 60000000 1000000
  done
  measure rb redis "redis-benchmark EVALSHA tollgate script" "c50 -P 16" 60 --redis --requests $((REQUESTS * 2)) -- \
    "${RB[@]}" -c 50 -P 16 -n $((REQUESTS * 2)) -r $KEYS evalsha "$SHA" 2 "tollgate:rb16:gcra:{__rand_int__}" "tollgate:rb16:override:{__rand_int__}" 1 1000000 60000000 1000000
  # the c50 row against -P 16 and against the peers, all from this repetition
  local refs="redis|redis-benchmark EVALSHA tollgate script|c50 -P 1|redis-benchmark -P 1;redis|redis-benchmark EVALSHA tollgate script|c50 -P 16|redis-benchmark -P 16"
  if [ -n "$RUST_PEERS" ]; then
    local impl
    for impl in actix-ext-rl raw-evalsha tower-rl-redis throttle-kit limitador-redis; do
      measure rustpeers redis "rust-peers $impl" "c50 open" 60 --redis -- \
        "$RUST_PEERS" bench --redis "$REDIS_URL" --impl "$impl" --scenario open --calls "$REQUESTS" --conc 50 --keys $KEYS
      refs+=";redis|rust-peers $impl|c50 open|$impl"
    done
  fi
  if [ -n "$NODE_OK" ]; then
    measure jsonline redis "node rate-limiter-flexible" "c50 allow" 90 --redis --requests "$REQUESTS" -- \
      "${peer_env[@]}" node "$PEERS_DIR/node/bench.js" throughput allow "$REQUESTS" $KEYS 50
    refs+=";redis|node rate-limiter-flexible|c50 allow|rate-limiter-flexible"
  fi
  if [ -n "$PY" ]; then
    measure jsonline redis "python limits (async redis-py)" "c50 fixed allow" 90 --redis --requests 20000 -- \
      "${peer_env[@]}" "$PY" "$PEERS_DIR/py/bench.py" throughput async-redispy fixed allow 20000 $KEYS 50
    refs+=";redis|python limits (async redis-py)|c50 fixed allow|python limits"
  fi
  # a second tollgate c50 run after the peers, so the ratios bracket them in time
  measure tollgate redis "tollgate (library, Redis store)" "c50 after peers" 60 --redis --requests "$REQUESTS" \
    --extra ratio_to "$refs" -- "${TG[@]}" --concurrency 50 --requests "$REQUESTS" --variant "c50 after peers"
}

part_algorithms() {
  local algo n=$((REQUESTS / 2))
  for algo in gcra token-bucket fixed-window sliding-window sliding-log; do
    measure tollgate algorithms "tollgate $algo" "c50 allow, every decision in Redis" 60 --redis --requests "$n" -- \
      "${TG[@]}" --algorithm "$algo" --limit "$(limit_of "$algo")" --over-limit-cache off --concurrency 50 --requests "$n" --key-prefix "alg$REP:" --variant "$algo"
  done
  # the peers' scripts, driven by redis-benchmark at the same shape (50 clients, 10,000 keys)
  if [ -n "$PEERS_DIR" ] && [ -f "$PEERS_DIR/lua/gcra.lua" ]; then
    local g f
    g=$(rcli -x script load <"$PEERS_DIR/lua/gcra.lua")
    f=$(rcli -x script load <"$PEERS_DIR/lua/fixed_window.lua")
    measure rb algorithms "peers lua/gcra.lua (redis-benchmark)" "c50 allow" 60 --redis --requests "$n" -- \
      "${RB[@]}" -c 50 -P 1 -n "$n" -r $KEYS evalsha "$g" 1 "gcra:a$REP:__rand_int__" 1000000 1000000 60 1
    measure rb algorithms "tollgate gcra script (redis-benchmark)" "c50 allow" 60 --redis --requests "$n" -- \
      "${RB[@]}" -c 50 -P 1 -n "$n" -r $KEYS evalsha "$SHA" 2 "tollgate:alg:gcra:{__rand_int__}" "tollgate:alg:override:{__rand_int__}" 1 1000000 60000000 1000000
    measure rb algorithms "peers lua/fixed_window.lua (redis-benchmark)" "c50 allow" 60 --redis --requests "$n" -- \
      "${RB[@]}" -c 50 -P 1 -n "$n" -r $KEYS evalsha "$f" 1 "fw$REP:__rand_int__" 1 60
    measure rb algorithms "tollgate fixed-window script (redis-benchmark)" "c50 allow" 60 --redis --requests "$n" -- \
      "${RB[@]}" -c 50 -P 1 -n "$n" -r $KEYS evalsha "${SHAS[fixed-window]}" 2 "tollgate:alg:fixed-window:{__rand_int__}" "tollgate:alg:override:{__rand_int__}" 1 1000000 60000000 1000000
  fi
}

part_flood() {
  # 10 per 60 s, every key exhausted by an untimed pass first: the timed part is rejections
  measure tollgate flood "tollgate (library, Redis store)" "over-limit cache on" 90 --requests "$REQUESTS" \
    --extra ratio_to "flood|node rate-limiter-flexible|reject-inmem|rate-limiter-flexible inMemoryBlockOnConsumed;flood|rust-peers limitador-cached|c50 tight|limitador cached" -- \
    "${TG[@]}" --limit 10 --period 60s --exhaust-first --concurrency 50 --requests "$REQUESTS" --key-prefix "flood$REP:" --variant flood
  measure tollgate flood "tollgate (library, Redis store)" "over-limit cache off" 90 --requests "$REQUESTS" \
    --extra ratio_to "flood|node rate-limiter-flexible|reject|rate-limiter-flexible (Redis)" -- \
    "${TG[@]}" --limit 10 --period 60s --exhaust-first --over-limit-cache off --concurrency 50 --requests "$REQUESTS" --key-prefix "floodoff$REP:" --variant flood-nocache
  if [ -n "$NODE_OK" ]; then
    measure jsonline flood "node rate-limiter-flexible" "reject-inmem" 90 --requests "$REQUESTS" -- \
      "${peer_env[@]}" node "$PEERS_DIR/node/bench.js" throughput reject-inmem "$REQUESTS" $KEYS 50
    measure jsonline flood "node rate-limiter-flexible" "reject" 90 --requests "$REQUESTS" -- \
      "${peer_env[@]}" node "$PEERS_DIR/node/bench.js" throughput reject "$REQUESTS" $KEYS 50
  fi
  if [ -n "$RUST_PEERS" ]; then
    measure rustpeers flood "rust-peers limitador-cached" "c50 tight" 60 --redis -- \
      "$RUST_PEERS" bench --redis "$REDIS_URL" --impl limitador-cached --scenario tight --calls "$REQUESTS" --conc 50 --keys $KEYS
  fi
}

# One accuracy round: 3 processes started together, 32 in flight each, 200 attempts each on ONE
# key, limit 100 per hour (nothing refills during the run): exactly 100 may pass in total.
# (A function run through `bash -c` so that `timeout` bounds it.)
accuracy_round() {
  local algo=$1 p pids=()
  for p in 1 2 3; do
    "$TOLLGATE" bench --store "$REDIS_URL" --json --algorithm "$algo" --limit 100 --period 1h --keys 1 \
      --concurrency 32 --requests 200 --over-limit-cache off --key-prefix "acc$REP-$algo:" --variant acc &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
}
# The same with Limitador's AsyncRedisStorage (rust-peers), its ACC lines turned into JSON.
limitador_round() {
  local p pids=() start
  start=$(($(date +%s%3N) + 1000))
  for p in 1 2 3; do
    "$RUST_PEERS" accuracy --redis "$REDIS_URL" --impl limitador-redis --attempts 200 --limit 100 \
      --start-at-ms "$start" --round "$REP" --proc "$p" |
      awk -F'\t' '$1=="ACC"{printf "{\"allowed\": %d, \"attempts\": %d, \"errors\": %d}\n", $6, $5, $7}' &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
}
export -f accuracy_round limitador_round

part_accuracy() {
  export TOLLGATE REDIS_URL REP RUST_PEERS
  local algo
  for algo in gcra sliding-log; do
    measure accuracy accuracy "tollgate (library, Redis store)" "$algo, 3 processes x 32 in flight" 60 \
      --extra ideal 100 -- bash -c 'accuracy_round "$1"' _ "$algo"
  done
  if [ -n "$RUST_PEERS" ]; then
    rcli flushall >/dev/null
    measure accuracy accuracy "rust-peers limitador-redis" "3 processes x 200 concurrent" 60 \
      --extra ideal 100 -- bash -c limitador_round
  fi
}

# The commands one decision sends, from a MONITOR capture (script-internal commands are tagged
# `lua` there and are not round trips). Not timed: MONITOR slows Redis down.
commands_per_decision() {
  local algo n=2000
  for algo in gcra sliding-log; do
    local cap=$RAW/monitor-$algo.txt
    redis-cli -p "$REDIS_PORT" monitor >"$cap" 2>/dev/null &
    local mon=$!
    sleep 0.3
    timeout 60 "$TOLLGATE" bench --store "$REDIS_URL" --json --algorithm "$algo" --limit "$(limit_of "$algo")" \
      --over-limit-cache off --concurrency 50 --requests $n --key-prefix "mon:" --variant monitor >/dev/null ||
      log "  MONITOR run of $algo failed"
    sleep 0.3
    kill "$mon" 2>/dev/null || true
    wait "$mon" 2>/dev/null || true
    summarize monitor "$cap" $n --section commands --contender "tollgate (library, Redis store)" --variant "$algo" >>"$JSONL"
  done
  log "  commands per decision: $(grep '"section": "commands"' "$JSONL" | while read -r l; do summarize brief "$l"; done | tr '\n' ' ')"
}

# The policy every HTTP server of this script runs: never rejecting.
write_http_config() {
  printf 'policies:\n  api: { algorithm: gcra, rate: 1000000/min }\n' >"$RUN/tollgate.yaml"
  # The same without live stats (GET /v1/stats, the dashboard): what keeping them costs.
  printf 'stats: false\npolicies:\n  api: { algorithm: gcra, rate: 1000000/min }\n' >"$RUN/tollgate-nostats.yaml"
}

# HTTP servers: started once, measured in turns
start_http() {
  HTTP_MEM_PORT=$(free_port)
  HTTP_NOSTATS_PORT=$(free_port)
  HTTP_REDIS_PORT=$(free_port)
  write_http_config
  TOLLGATE_LOG=text RUST_LOG=warn "$TOLLGATE" serve --config "$RUN/tollgate.yaml" --listen "127.0.0.1:$HTTP_MEM_PORT" --store memory >"$RUN/serve-mem.log" 2>&1 &
  PIDS+=($!)
  TOLLGATE_LOG=text RUST_LOG=warn "$TOLLGATE" serve --config "$RUN/tollgate-nostats.yaml" --listen "127.0.0.1:$HTTP_NOSTATS_PORT" --store memory >"$RUN/serve-nostats.log" 2>&1 &
  PIDS+=($!)
  TOLLGATE_LOG=text RUST_LOG=warn "$TOLLGATE" serve --config "$RUN/tollgate.yaml" --listen "127.0.0.1:$HTTP_REDIS_PORT" --store "$REDIS_URL" >"$RUN/serve-redis.log" 2>&1 &
  PIDS+=($!)
  HTTP_TARGETS=("tollgate serve, memory store|http://127.0.0.1:$HTTP_MEM_PORT|$ROOT/bench/wrk/check.lua"
    "tollgate serve, memory store, stats off|http://127.0.0.1:$HTTP_NOSTATS_PORT|$ROOT/bench/wrk/check.lua"
    "tollgate serve, Redis store|http://127.0.0.1:$HTTP_REDIS_PORT|$ROOT/bench/wrk/check.lua")
  if [ -n "$FLOOR_BIN" ]; then
    "$FLOOR_BIN" 0 >"$RUN/floor.out" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do grep -q '^listening' "$RUN/floor.out" && break; sleep 0.05; done
    local fp
    fp=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$RUN/floor.out")
    HTTP_TARGETS=("HTTP floor (axum, fixed answer)|http://127.0.0.1:$fp|$ROOT/bench/wrk/check.lua" "${HTTP_TARGETS[@]}")
  fi
  local tp="" rp
  if [ -n "$TC_BIN" ]; then
    tp=$(free_port)
    rp=$(free_port)
    "$TC_BIN" --http --http-host 127.0.0.1 --http-port "$tp" --redis --redis-host 127.0.0.1 --redis-port "$rp" \
      --store periodic --log-level warn >"$RUN/tc.out" 2>&1 &
    PIDS+=($!)
    HTTP_TARGETS+=("throttlecrab-server HTTP|http://127.0.0.1:$tp|$PEERS_DIR/http-floor/lua/throttlecrab.lua")
  fi
  local t name url script
  for url in "http://127.0.0.1:$HTTP_MEM_PORT" "http://127.0.0.1:$HTTP_NOSTATS_PORT" "http://127.0.0.1:$HTTP_REDIS_PORT" ${TC_BIN:+"http://127.0.0.1:$tp"}; do
    for _ in $(seq 100); do curl -sf "$url/health" >/dev/null 2>&1 && break; sleep 0.05; done
  done
  for t in "${HTTP_TARGETS[@]}"; do # warm-up, not recorded
    IFS='|' read -r name url script <<<"$t"
    timeout 10 wrk -t2 -c50 -d1s -s "$script" "$url" >/dev/null 2>&1 || log "warm-up of $name failed"
  done
}

part_http() {
  command -v wrk >/dev/null || return 0
  if [ -z "${HTTP_TARGETS+x}" ]; then start_http; fi
  local t name url script refs="http|tollgate serve, memory store, stats off|wrk -t2 -c50|stats off;"
  if [ -n "$FLOOR_BIN" ]; then refs+="http|HTTP floor (axum, fixed answer)|wrk -t2 -c50|HTTP floor;"; fi
  if [ -n "$TC_BIN" ]; then refs+="http|throttlecrab-server HTTP|wrk -t2 -c50|throttlecrab;"; fi
  refs=${refs%;}
  for t in "${HTTP_TARGETS[@]}"; do
    IFS='|' read -r name url script <<<"$t"
    local extra=()
    if [[ "$name" == tollgate* ]] && [[ "$name" != *"stats off" ]]; then extra=(--extra ratio_to "$refs"); fi
    measure wrk http "$name" "wrk -t2 -c50" $((DUR + 30)) "${extra[@]}" -- \
      wrk -t2 -c50 -d"${DUR}s" --latency -s "$script" "$url"
  done
}

# One server with both front ends, so the two paths share the process, the store and the policy.
start_grpc() {
  GRPC_HTTP_PORT=$(free_port)
  GRPC_PORT=$(free_port)
  mkdir -p "$RUN/rl"
  printf 'domain: bench\ndescriptors:\n  - key: key\n    rate_limit: { unit: minute, requests_per_unit: 1000000, algorithm: gcra }\n' >"$RUN/rl/bench.yaml"
  printf 'envoy: { config_dir: %s }\npolicies:\n  bench: { algorithm: gcra, rate: 1000000/min }\n' "$RUN/rl" >"$RUN/tollgate-grpc.yaml"
  TOLLGATE_LOG=text RUST_LOG=warn "$TOLLGATE" serve --config "$RUN/tollgate-grpc.yaml" --listen "127.0.0.1:$GRPC_HTTP_PORT" \
    --grpc-listen "127.0.0.1:$GRPC_PORT" --store memory >"$RUN/serve-grpc.log" 2>&1 &
  GRPC_PID=$!
  PIDS+=("$GRPC_PID")
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$GRPC_HTTP_PORT/health" >/dev/null 2>&1 && break; sleep 0.05; done
  timeout 30 "$TOLLGATE" bench --grpc "127.0.0.1:$GRPC_PORT" --concurrency 64 --requests 20000 --json >/dev/null 2>&1 || log "warm-up of gRPC failed"
  timeout 30 "$TOLLGATE" bench --http "http://127.0.0.1:$GRPC_HTTP_PORT" --policy bench --concurrency 64 --requests 20000 --json >/dev/null 2>&1 || log "warm-up of HTTP failed"
}

part_grpc() {
  if [ -z "${GRPC_PID+x}" ]; then start_grpc; fi
  local n=$((REQUESTS / 3 * 2)) ref="grpc|tollgate serve HTTP API (tollgate bench --http)|c64|HTTP"
  local v variants=("http" "grpc 1 connection" "grpc, a connection per core")
  # even repetitions in the reverse order
  if [ $((REP % 2)) = 0 ]; then variants=("grpc, a connection per core" "grpc 1 connection" "http"); fi
  for v in "${variants[@]}"; do
    case $v in
      http) measure tollgate grpc "tollgate serve HTTP API (tollgate bench --http)" c64 60 --cpu "$GRPC_PID" -- \
        "$TOLLGATE" bench --http "http://127.0.0.1:$GRPC_HTTP_PORT" --policy bench --concurrency 64 --requests "$n" --json --variant http ;;
      "grpc 1 connection") measure tollgate grpc "tollgate serve Envoy gRPC (tollgate bench --grpc)" "c64, 1 connection" 60 --cpu "$GRPC_PID" \
        --extra ratio_to "$ref" -- "$TOLLGATE" bench --grpc "127.0.0.1:$GRPC_PORT" --grpc-connections 1 --concurrency 64 --requests "$n" --json --variant grpc1 ;;
      "grpc, a connection per core") measure tollgate grpc "tollgate serve Envoy gRPC (tollgate bench --grpc)" "c64, a connection per core" 60 --cpu "$GRPC_PID" \
        --extra ratio_to "$ref" -- "$TOLLGATE" bench --grpc "127.0.0.1:$GRPC_PORT" --concurrency 64 --requests "$n" --json --variant grpc ;;
    esac
  done
}

# ---------------------------------------------------------------- callgrind (once)
part_callgrind() {
  command -v valgrind >/dev/null || { log "skipped callgrind: valgrind not installed"; return 0; }
  log "callgrind: memory store vs governor, instructions per check (difference of two run lengths)"
  local d=$RUN/cg
  mkdir -p "$d"
  cg_total() { sed -n 's/^summary: *//p; s/^totals: *//p' "$1" | head -1 | awk '{print $1}'; }
  # crates/tollgate/examples/keyed_loop.rs: one thread, 10,000 String keys in a fixed order, GCRA
  # 1e6/min: MemoryStore::decide_one_now (tollgate), Limiter::check (limiter) or governor's
  # check_key. Two lengths, both long past inserting every key: the difference is the cost of a
  # check on an existing key.
  local n1=200000 n2=700000 who
  if [ -n "$KEYED_LOOP" ]; then
    for who in tollgate limiter governor; do
      local ir1 ir2
      timeout 300 valgrind --tool=callgrind --callgrind-out-file="$d/k1.out" "$KEYED_LOOP" "$who" $n1 >/dev/null 2>&1
      timeout 300 valgrind --tool=callgrind --callgrind-out-file="$d/k2.out" "$KEYED_LOOP" "$who" $n2 >/dev/null 2>&1
      ir1=$(cg_total "$d/k1.out")
      ir2=$(cg_total "$d/k2.out")
      echo "{\"section\": \"callgrind\", \"contender\": \"$who keyed check (examples/keyed_loop, 1 thread, 10,000 keys)\", \"variant\": \"gcra allow\", \"rep\": 1, \"instructions_per_decision\": $(((ir2 - ir1) / (n2 - n1)))}" >>"$JSONL"
      log "  $who: $(((ir2 - ir1) / (n2 - n1))) instructions per check"
    done
  fi

  # The Redis store's client side: `tollgate bench --store redis://…` at 50 in flight (the
  # Limiter, the resilience layer, RedisStore, the connection, and the bench loop's own clock
  # and histogram), two lengths against the private Redis (not under valgrind).
  log "callgrind: tollgate bench --store redis, client instructions per decision"
  local r1=10000 r2=30000 c1 c2 r
  for r in $r1 $r2; do
    rcli flushall >/dev/null
    timeout 600 valgrind --tool=callgrind --callgrind-out-file="$d/client.$r.out" "$TOLLGATE" bench \
      --store "$REDIS_URL" --json --concurrency 50 --requests "$r" >/dev/null 2>&1
  done
  c1=$(cg_total "$d/client.$r1.out")
  c2=$(cg_total "$d/client.$r2.out")
  if [ -n "$c1" ] && [ -n "$c2" ]; then
    echo "{\"section\": \"callgrind\", \"contender\": \"tollgate bench --store redis, client side (library path + bench loop)\", \"variant\": \"gcra allow, 50 in flight\", \"rep\": 1, \"instructions_per_decision\": $(((c2 - c1) / (r2 - r1)))}" >>"$JSONL"
    log "  client: $(((c2 - c1) / (r2 - r1))) instructions per decision"
  fi

  # HTTP servers' user-space instructions per request: each under callgrind, wrk -t1 -c10 (3 s
  # unmeasured, then zero the counters, 6 s, dump), the dump's total over wrk's request count.
  if command -v wrk >/dev/null; then
    log "callgrind: HTTP servers, user-space instructions per request (wrk -t1 -c10)"
    cg_http() { # label port lua cmd...
      local label=$1 port=$2 lua=$3 hpid f n ir
      shift 3
      (cd "$d" && RUST_LOG=warn exec valgrind --tool=callgrind --callgrind-out-file="$d/http.%p" "$@" >"$d/http-vg.log" 2>&1) &
      hpid=$!
      PIDS+=($hpid)
      for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.2; done
      timeout 60 wrk -t1 -c10 -d3s -s "$lua" "http://127.0.0.1:$port" >/dev/null 2>&1 || true
      callgrind_control -z "$hpid" >/dev/null 2>&1 || true
      n=$(timeout 60 wrk -t1 -c10 -d6s -s "$lua" "http://127.0.0.1:$port" 2>/dev/null | awk '/requests in/ {print $1}' || true)
      callgrind_control -d "$hpid" >/dev/null 2>&1 || true
      sleep 1
      kill -9 "$hpid" 2>/dev/null
      wait "$hpid" 2>/dev/null || true
      f=$(ls -t "$d"/http.*.* 2>/dev/null | head -1 || true)
      ir=""
      [ -z "$f" ] || ir=$(cg_total "$f")
      rm -f "$d"/http.*
      if [ -n "$n" ] && [ "$n" -gt 0 ] && [ -n "$ir" ]; then
        echo "{\"section\": \"callgrind\", \"contender\": \"$label\", \"variant\": \"HTTP, wrk -t1 -c10, user-space instructions per request\", \"rep\": 1, \"instructions_per_decision\": $((ir / n))}" >>"$JSONL"
        log "  $label: $((ir / n)) instructions per request"
      else
        log "  $label: no measurement (see $d/http-vg.log)"
      fi
    }
    local hp
    [ -f "$RUN/tollgate.yaml" ] || write_http_config
    hp=$(free_port)
    cg_http "tollgate serve, memory store" "$hp" "$ROOT/bench/wrk/check.lua" "$TOLLGATE" serve \
      --config "$RUN/tollgate.yaml" --listen "127.0.0.1:$hp" --store memory
    if [ -n "$FLOOR_BIN" ]; then
      hp=$(free_port)
      cg_http "HTTP floor (axum, fixed answer)" "$hp" "$ROOT/bench/wrk/check.lua" "$FLOOR_BIN" "$hp"
    fi
    if [ -n "$TC_BIN" ]; then
      hp=$(free_port)
      cg_http "throttlecrab-server HTTP" "$hp" "$PEERS_DIR/http-floor/lua/throttlecrab.lua" "$TC_BIN" --http \
        --http-host 127.0.0.1 --http-port "$hp" --store periodic --log-level warn
    fi
  fi

  log "callgrind: redis-server instructions per script call (tollgate's script per algorithm, the peers' scripts)"
  local cport vpid algo
  cport=$(free_port)
  (cd "$d" && exec valgrind --tool=callgrind --callgrind-out-file="$d/redis.%p" redis-server --port "$cport" \
    --bind 127.0.0.1 --save "" --appendonly no --dir "$d" >"$d/vg.log" 2>&1) &
  vpid=$!
  PIDS+=($vpid)
  for _ in $(seq 100); do redis-cli -p "$cport" ping >/dev/null 2>&1 && break; sleep 0.2; done
  local tsha several
  several=$(redis-cli -p "$cport" -x script load <"$RUN/tollgate-several.lua")
  # Redis instructions per decision while `run` (a command) makes `decisions` of them
  cg_redis() { # label variant decisions command...
    local label=$1 variant=$2 decisions=$3
    shift 3
    callgrind_control -z "$vpid" >/dev/null 2>&1
    "$@" >/dev/null 2>&1
    callgrind_control -d "$vpid" >/dev/null 2>&1
    local f ir
    f=$(ls -t "$d"/redis.*.* 2>/dev/null | head -1)
    ir=$(cg_total "$f")
    rm -f "$f"
    echo "{\"section\": \"callgrind\", \"contender\": \"redis-server, $label\", \"variant\": \"$variant\", \"rep\": 1, \"instructions_per_decision\": $((ir / decisions))}" >>"$JSONL"
    log "  $label: $((ir / decisions)) instructions per decision"
  }
  # label sha keys... args...: 10,000 calls after 2,000 unmeasured; PER decisions per call
  cg_script() {
    local label=$1 sha=$2 per=${PER:-1} calls=$((10000 / ${PER:-1}))
    shift 2
    timeout 300 redis-benchmark -p "$cport" -c 4 -n 2000 -r $KEYS -q evalsha "$sha" "$@" >/dev/null 2>&1
    cg_redis "$label" "EVALSHA, 4 clients" $((calls * per)) \
      timeout 300 redis-benchmark -p "$cport" -c 4 -n "$calls" -r $KEYS -q evalsha "$sha" "$@"
  }
  for algo in gcra token-bucket fixed-window sliding-window sliding-log; do
    tsha=$(redis-cli -p "$cport" -x script load <"$RUN/tollgate-$algo.lua")
    # KEYS: the state key and the override key (none is set: the common case)
    cg_script "tollgate $algo allow" "$tsha" 2 "tollgate:cg:$algo:{__rand_int__}" "tollgate:cg:override:{__rand_int__}" 1 \
      "$(limit_of "$algo")" 60000000 "$(limit_of "$algo")"
  done
  # rejections: 1 per 60 s, the keys used up by the 2,000 unmeasured calls (and the first ones)
  tsha=$(redis-cli -p "$cport" -x script load <"$RUN/tollgate-gcra.lua")
  cg_script "tollgate gcra reject" "$tsha" 2 "tollgate:cgr:gcra:{__rand_int__}" "tollgate:cgr:override:{__rand_int__}" 1 1 60000000 1
  # the several-policies script with two GCRA policies of one identifier (two passes)
  cg_script "tollgate several, 2 x gcra allow" "$several" 4 "tollgate:cg2:a:{__rand_int__}" \
    "tollgate:cg2a:override:{__rand_int__}" "tollgate:cg2:b:{__rand_int__}" "tollgate:cg2b:override:{__rand_int__}" 1 5 1000000 60000000 1000000 5 1000000 60000000 1000000
  if [ -n "$PEERS_DIR" ] && [ -f "$PEERS_DIR/lua/gcra.lua" ]; then
    cg_script "peers lua/gcra.lua allow" "$(redis-cli -p "$cport" -x script load <"$PEERS_DIR/lua/gcra.lua")" 1 "gcra:a:__rand_int__" 1000000 1000000 60 1
    cg_script "peers lua/fixed_window.lua" "$(redis-cli -p "$cport" -x script load <"$PEERS_DIR/lua/fixed_window.lua")" 1 "fw:__rand_int__" 1 60
  fi
  # the Rust peers' scripts: raw-evalsha's token bucket (rust-peers/src/main.rs) and
  # tower-rate-limit-redis's GCRA (from the cargo registry, once rust-peers is built)
  if [ -f "$PEERS_DIR/rust-peers/src/main.rs" ]; then
    sed -n '/pub const TOKEN_BUCKET_LUA: &str = r#"/,/^"#;/p' "$PEERS_DIR/rust-peers/src/main.rs" | sed '1d;$d' >"$d/raw.lua"
    if [ -s "$d/raw.lua" ]; then
      cg_script "rust-peers raw-evalsha token bucket" "$(redis-cli -p "$cport" -x script load <"$d/raw.lua")" 1 "raw:__rand_int__" 1000000000 1000 60000
    fi
  fi
  local tower
  tower=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/tower-rate-limit-redis-1.0.2/scripts/rate_limit.lua 2>/dev/null | head -1 || true)
  if [ -n "$tower" ]; then
    cg_script "tower-rate-limit-redis GCRA" "$(redis-cli -p "$cport" -x script load <"$tower")" 1 "user-__rand_int__" 65535 1
  fi
  # batches, as the standalone connection sends them under load: 25 GCRA checks in one call
  local keys=() args=() i
  for i in $(seq 25); do
    keys+=("tollgate:cgb:gcra:{__rand_int__}" "tollgate:cgb:override:{__rand_int__}")
    args+=(1 1000000 60000000 1000000)
  done
  tsha=$(redis-cli -p "$cport" -x script load <"$RUN/tollgate-gcra.lua")
  PER=25 cg_script "tollgate gcra allow, batch of 25" "$tsha" 50 "${keys[@]}" "${args[@]}"
  # and as tollgate's own client sends them: 50 in flight on one connection, batches as they come
  cg_redis "tollgate gcra allow, tollgate bench c50" "tollgate bench --store, 50 in flight" 20000 \
    timeout 300 "$TOLLGATE" bench --store "redis://127.0.0.1:$cport" --algorithm gcra --limit 1000000 \
    --period 60s --concurrency 50 --requests 20000 --key-prefix cgbench:
  cg_script "return 1 (EVALSHA floor)" "$(redis-cli -p "$cport" script load 'return 1')" 1 "k:__rand_int__"
  redis-cli -p "$cport" shutdown nosave >/dev/null 2>&1 || true
  wait "$vpid" 2>/dev/null || true
}

# ---------------------------------------------------------------- repetitions
T_START=$(date +%s)
rep_s=0
reserve=0 # seconds kept for the callgrind part at the end
if has_part callgrind; then reserve=240; fi
for REP in $(seq "$REPEAT"); do
  now=$(date +%s)
  if [ "$REP" -gt 1 ] && [ $((now - T_START + rep_s * 11 / 10 + reserve)) -gt "$BUDGET_S" ]; then
    log "time budget ($BUDGET_S s) reached: stopping after $((REP - 1)) repetition(s)"
    break
  fi
  log "repetition $REP/$REPEAT (load $(cut -d' ' -f1 /proc/loadavg))"
  echo "load average at repetition $REP: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
  rs=$(date +%s)
  for part in core redis algorithms flood accuracy http grpc; do
    if has_part "$part"; then
      log " $part"
      rcli flushall >/dev/null
      "part_$part"
    fi
  done
  if [ "$REP" = 1 ] && has_part redis; then commands_per_decision; fi
  d=$(($(date +%s) - rs))
  if [ "$d" -gt "$rep_s" ]; then rep_s=$d; fi
done
if has_part callgrind; then
  if [ $(($(date +%s) - T_START)) -lt "$BUDGET_S" ]; then
    part_callgrind
  else
    log "skipped callgrind: over the time budget (run PARTS=callgrind scripts/bench.sh)"
  fi
fi

echo "timed part: $(($(date +%s) - T_START)) s; build: $((T_BUILT - T0)) s" >>"$OUT/env.txt"
summarize table "$JSONL" >"$OUT/table.md"
python3 - "$JSONL" >>"$OUT/table.md" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"instructions_per_decision"' in l]
if rows:
    print("\nInstructions per decision (callgrind; stable across noisy runs):\n")
    print("| measured | variant | instructions |\n|---|---|---:|")
    for r in rows:
        print(f"| {r['contender']} | {r['variant']} | {r['instructions_per_decision']:,} |")
EOF
echo
cat "$OUT/env.txt"
echo
cat "$OUT/table.md"
log "done: $OUT (timed part $(($(date +%s) - T_START)) s)"
