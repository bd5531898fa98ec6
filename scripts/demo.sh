#!/usr/bin/env bash
# The three-instance demo: a private Redis, three instances of examples/demo on
# 127.0.0.1:8081-8083 sharing it, 15 requests round-robin with one X-User-ID (10 x 200, then
# 5 x 429), then GET /api/status. Everything it starts is stopped by pid when it ends, fails, or
# is interrupted (Ctrl-C), and its temporary directory is removed.
#
# Exit status: 0 when the counts are 10 and 5, non-zero otherwise.
# For tests: DEMO_PORT moves the instances (first port; the next two follow), DEMO_BIN runs a
# demo binary already built instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly USER_ID=alice REQUESTS=15 LIMIT=10
readonly FIRST_PORT=${DEMO_PORT:-8081}
readonly PORTS=("$FIRST_PORT" "$((FIRST_PORT + 1))" "$((FIRST_PORT + 2))")

tmp=""
pids=()        # instances we started
redis_pid=""   # the private redis-server

die() {
  printf 'demo: %s\n' "$*" >&2
  exit 1
}

# Whether something accepts connections on 127.0.0.1:$1 (bash's /dev/tcp: no extra tools).
listening() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# TERM the given pids, give them 5 s to exit, KILL what is left, and reap them all.
stop() {
  local pid
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  for _ in $(seq 50); do
    local alive=0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 1 ] || break
    sleep 0.1
  done
  kill -KILL "$@" 2>/dev/null || true
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ ${#pids[@]} -gt 0 ] || [ -n "$redis_pid" ]; then
    echo
    echo "stopping the ${#pids[@]} instance(s) and redis-server"
  fi
  # The instances first: they use Redis until they stop.
  stop "${pids[@]}"
  [ -z "$redis_pid" ] || stop "$redis_pid"
  [ -z "$tmp" ] || rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

scripts/setup.sh  # redis-server and curl among what it installs

for port in "${PORTS[@]}"; do
  if listening "$port"; then
    die "port $port is already in use; the demo needs 127.0.0.1:${PORTS[0]}-${PORTS[2]} free (see: ss -ltnp 'sport = :$port')"
  fi
done

if [ -n "${DEMO_BIN:-}" ]; then
  bin=$DEMO_BIN
else
  echo "building the demo (the first build compiles the dependencies: a few minutes)"
  cargo build -q --locked -p tollgate-demo
  bin="${CARGO_TARGET_DIR:-target}/debug/demo"
fi
[ -x "$bin" ] || die "no demo binary at $bin"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-demo.XXXXXX")

# A private redis-server on a free loopback port: never the machine's own Redis on 6379.
# Ports 23000-24999 sit between the test harness's server and cluster-bus ranges.
redis_port=""
for _ in $(seq 20); do
  port=$((23000 + RANDOM % 2000))
  listening "$port" && continue
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$tmp" --pidfile "$tmp/redis.pid" --logfile "$tmp/redis.log" &
  redis_pid=$!
  for _ in $(seq 50); do
    kill -0 "$redis_pid" 2>/dev/null || break
    # Ours only if the server on that port has our pid (another one may have taken the port).
    if [ "$(redis-cli -h 127.0.0.1 -p "$port" info server 2>/dev/null |
      sed -n 's/^process_id:\([0-9]*\).*/\1/p')" = "$redis_pid" ]; then
      redis_port=$port
      break
    fi
    sleep 0.1
  done
  [ -z "$redis_port" ] || break
  stop "$redis_pid"
  redis_pid=""
done
[ -n "$redis_port" ] || die "could not start redis-server (log: $(tail -n 5 "$tmp/redis.log" 2>/dev/null))"
echo "redis-server on 127.0.0.1:$redis_port (pid $redis_pid), data in $tmp"

for port in "${PORTS[@]}"; do
  env -u REDIS_PASSWORD -u HOST -u INSTANCE PORT="$port" REDIS_URL="redis://127.0.0.1:$redis_port" \
    "$bin" >"$tmp/demo-$port.log" 2>&1 &
  pids+=("$!")
  echo "instance 127.0.0.1:$port (pid $!), log $tmp/demo-$port.log"
done

# Healthy means: our process is alive and the server on its port names itself as that instance.
for i in "${!PORTS[@]}"; do
  port=${PORTS[$i]} pid=${pids[$i]} healthy=""
  for _ in $(seq 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
      die "instance 127.0.0.1:$port exited; its log:
$(tail -n 5 "$tmp/demo-$port.log")"
    fi
    if curl -fsS --max-time 1 "http://127.0.0.1:$port/health" 2>/dev/null |
      grep -q "\"instance\":\"127.0.0.1:$port\""; then
      healthy=1
      break
    fi
    sleep 0.1
  done
  [ -n "$healthy" ] || die "instance 127.0.0.1:$port is not healthy after 30 s (log: $tmp/demo-$port.log)"
done
echo "all three instances are healthy"

# Set `value` to header $1 of the last response (empty when there is none). Bash builtins only,
# like the request loop below: bash can fail to run its INT trap when Ctrl-C lands while it
# parses a command substitution ("interrupt trap: unexpected EOF"), and then exits 2 instead
# of 130, so the loop a Ctrl-C usually interrupts has none.
header() {
  value=""
  local line name
  [ -f "$tmp/headers" ] || return 0
  while IFS= read -r line; do
    line=${line%$'\r'}
    name=${line%%:*}
    if [ "${name,,}" = "${1,,}" ]; then
      value=${line#*:}
      value=${value# }
    fi
  done <"$tmp/headers"
}

echo
echo "$REQUESTS x GET /api/data with X-User-ID: $USER_ID, round robin over the three instances"
printf '%4s  %-16s %s\n' "#" "answered by" "status"
allowed=0 limited=0 order_ok=1
for ((i = 1; i <= REQUESTS; i++)); do
  port=${PORTS[$(((i - 1) % 3))]}
  rm -f "$tmp/headers"
  curl -sS --max-time 5 -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}' \
    -H "X-User-ID: $USER_ID" "http://127.0.0.1:$port/api/data" >"$tmp/status" || true
  status=""
  read -r status <"$tmp/status" || true # curl writes no newline after the code
  status=${status:-000}
  header x-instance
  instance=$value
  case $status in
    200)
      allowed=$((allowed + 1))
      [ "$limited" = 0 ] || order_ok=0
      header ratelimit # "name";r=<remaining>;t=<seconds>
      remaining=${value#*;r=}
      detail="remaining ${remaining%%;*}"
      ;;
    429)
      limited=$((limited + 1))
      header retry-after
      detail="retry after $value s"
      ;;
    *)
      detail="unexpected: $(head -c 200 "$tmp/body" 2>/dev/null || true)"
      ;;
  esac
  printf '%4d  %-16s %s  %s\n' "$i" "${instance:-127.0.0.1:$port?}" "$status" "$detail"
done

port=${PORTS[$((REQUESTS % 3))]}
echo
echo "GET /api/status (shows the quota, spends nothing):"
curl -sS --max-time 5 -H "X-User-ID: $USER_ID" "http://127.0.0.1:$port/api/status" || true
echo

echo
echo "allowed $allowed, limited $limited"
expected_limited=$((REQUESTS - LIMIT))
if [ "$allowed" != "$LIMIT" ] || [ "$limited" != "$expected_limited" ] || [ "$order_ok" != 1 ]; then
  die "expected $LIMIT x 200, then $expected_limited x 429"
fi
