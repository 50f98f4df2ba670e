#!/usr/bin/env bash
# Starts a local sked cluster for `make run`: the store (FerretDB on SQLite,
# data under var/, with deploy/store-indexer.py beside it), one gateway, two
# masters and two workers, all on loopback. Prints the gateway URL and an
# admin token; Ctrl-C stops it all.
#
# Environment: SKED_HTTP_ADDR (default 127.0.0.1:8080), SKED_STORE_PORT
# (default 27018), SKED_BIN_DIR (default bin), SKED_VAR_DIR (default var).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SKED_BIN_DIR:-bin}
VAR=${SKED_VAR_DIR:-var}
HTTP=${SKED_HTTP_ADDR:-127.0.0.1:8080}
STORE_PORT=${SKED_STORE_PORT:-27018}
FERRETDB=${FERRETDB:-$(command -v ferretdb || echo "$HOME/go/bin/ferretdb")}
mkdir -p "$VAR/store" "$VAR/log"

if [ ! -s "$VAR/jwt-secret" ]; then
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$VAR/jwt-secret"
    chmod 600 "$VAR/jwt-secret"
fi
export SKED_JWT_SECRET=$(cat "$VAR/jwt-secret")
export SKED_MONGO_URI="mongodb://127.0.0.1:$STORE_PORT/sked"
export SKED_MASTERS="tcp://127.0.0.1:7601,tcp://127.0.0.1:7602"
export SKED_HTTP_ADDR=$HTTP

pids=()
stop() {
    trap - INT TERM EXIT
    echo; echo "stopping sked..."
    for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "stopped"
    exit 0
}
trap stop INT TERM EXIT

wait_port() { # host port what
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$3 did not start; see $VAR/log/" >&2
    exit 1
}

"$FERRETDB" --handler=sqlite --sqlite-url="file:$PWD/$VAR/store/" \
    --listen-addr="127.0.0.1:$STORE_PORT" --state-dir="$PWD/$VAR/store" \
    --telemetry=disable --debug-addr=- --log-level=warn > "$VAR/log/store.log" 2>&1 &
pids+=($!)
wait_port 127.0.0.1 "$STORE_PORT" "the store (FerretDB)"
# The index FerretDB's own `_id` lookups can use (see the script's header).
python3 deploy/store-indexer.py "$VAR/store" > "$VAR/log/store-indexer.log" 2>&1 &
pids+=($!)

for i in 1 2; do
    SKED_NODE_ID="master-$i" SKED_MASTER_BIND="tcp://127.0.0.1:760$i" \
        "$BIN/sked-master" > "$VAR/log/master-$i.log" 2>&1 &
    pids+=($!)
done
for i in 1 2; do
    SKED_NODE_ID="worker-$i" "$BIN/sked-worker" > "$VAR/log/worker-$i.log" 2>&1 &
    pids+=($!)
done
SKED_NODE_ID=gateway-1 "$BIN/sked-gateway" > "$VAR/log/gateway.log" 2>&1 &
pids+=($!)
wait_port "${HTTP%:*}" "${HTTP##*:}" "the gateway"

TOKEN=$("$BIN/sked-gateway" token --sub admin --role admin --ttl 86400)
cat <<MSG

sked is running.
  API:    http://$HTTP/api/scheduler/
  health: curl http://$HTTP/api/scheduler/health
  token:  $TOKEN
  logs:   $VAR/log/

Try:
  curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
       -d '{"name":"hello","trigger_config":{"interval":1,"unit":"seconds"},"execution_config":{"task_type":"noop"}}' \\
       http://$HTTP/api/scheduler/triggers/

Press Ctrl-C to stop.
MSG
wait -n "${pids[@]}" || true
echo "a sked process exited; see $VAR/log/" >&2
