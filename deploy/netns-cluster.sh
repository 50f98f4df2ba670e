#!/usr/bin/env bash
# A multi-host sked cluster on one machine: every "host" is a network
# namespace with its own address on a private subnet, joined by veth pairs to
# a bridge in the root namespace. Each process binds its own host's address
# and is configured only with the other hosts' addresses, as across machines.
#
#   host   address       processes
#   store  10.77.0.10    FerretDB (:27017), store-indexer (no network)
#   gw1    10.77.0.11    gateway (:8080), master-1 (:7601)
#   m2     10.77.0.12    master-2            (:7601)
#   m3     10.77.0.13    master-3            (:7601)
#   w1     10.77.0.21    worker-1
#   w2     10.77.0.22    worker-2
#   wN     10.77.0.(20+N) worker-N           (add-worker N)
#   (root namespace: 10.77.0.1 on the bridge, so tools on this machine reach
#    the gateway and the store)
#
# Usage: deploy/netns-cluster.sh COMMAND [ARGS]   (root; needs `ip netns`)
#   up                 create hosts, start store, masters, workers, gateway
#   down               stop every process (SIGTERM, then SIGKILL after 40 s),
#                      report exit codes and sanitizer reports, remove every
#                      namespace/veth/bridge; idempotent, works after a
#                      failed or partial `up`; exit 1 if a process did not
#                      exit 0 or its log holds a sanitizer report
#   status             hosts, addresses, processes alive, exit codes
#   env                the cluster's addresses as shell variables
#   token [SUB [ROLE]] a JWT for the gateway (default admin/admin)
#   add-worker N       new host wN (10.77.0.(20+N)) with worker-N, live
#   kill NAME [-SIG]   signal a process (default TERM) and wait for it to end
#   start NAME         (re)start a process with its configuration
#   restart NAME       SIGTERM, wait, start
#   isolate HOST       link down the host's veth (cuts it off the network)
#   heal HOST          link up again
#   store-stop, store-start
#   pid NAME, hosts, procs
# NAME: store, store-indexer, gateway, master-1..3, worker-N.
#
# Environment (saved at `up`, reused by later commands):
#   SKED_CLUSTER_DIR   data, logs, pid files (default var/netns)
#   SKED_BIN_DIR       binaries (default build/asan/bin, the sanitizer build)
#   SKED_STORE_DIR     the store's SQLite files (default $SKED_CLUSTER_DIR/store;
#                      a tmpfs such as /dev/shm/... makes FerretDB much faster)
#   SKED_NETNS_PREFIX  namespace/link name prefix (default sk)
#   SKED_NETNS_SUBNET  first three octets of the /24 (default 10.77.0)
#   NETNS_MASTERS (3), NETNS_WORKERS (2)
#   SKED_LEASE_TTL_MS, SKED_HEARTBEAT_MS, SKED_WORKER_TIMEOUT_MS,
#   SKED_PARTITIONS, SKED_LOG_LEVEL, SKED_DRAIN_TIMEOUT_MS, SKED_WORKER_SLOTS,
#   SKED_TASK_TYPES, SKED_RATE_LIMIT, ASAN_OPTIONS, UBSAN_OPTIONS, LSAN_OPTIONS:
#   passed to the processes when set.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DIR=${SKED_CLUSTER_DIR:-var/netns}
case $DIR in /*) ;; *) DIR="$ROOT/$DIR" ;; esac
CONF="$DIR/cluster.conf"
# Settings fixed at `up` win over the caller's environment afterwards.
if [ "${1:-}" != up ] && [ -f "$CONF" ]; then . "$CONF"; fi
P=${SKED_NETNS_PREFIX:-sk}
NET=${SKED_NETNS_SUBNET:-10.77.0}
BIN=${SKED_BIN_DIR:-$ROOT/build/asan/bin}
case $BIN in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
FERRETDB=${FERRETDB:-$(command -v ferretdb || echo /usr/local/bin/ferretdb)}
STORE_DIR=${SKED_STORE_DIR:-$DIR/store}
NMASTERS=${NETNS_MASTERS:-3}
NWORKERS=${NETNS_WORKERS:-2}
BR="${P}br0"
STORE_PORT=27017
HTTP_PORT=8080
MASTER_PORT=7601
SANITIZER_MARKS='ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:'
PASS_VARS="SKED_LEASE_TTL_MS SKED_HEARTBEAT_MS SKED_WORKER_TIMEOUT_MS SKED_PARTITIONS SKED_LOG_LEVEL
 SKED_LOG_FORMAT SKED_DRAIN_TIMEOUT_MS SKED_WORKER_SLOTS SKED_TASK_TYPES SKED_RATE_LIMIT SKED_RATE_BURST
 SKED_KILL_GRACE_MS ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=66}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$ROOT/tests/lsan.supp:print_suppressions=0}

die() { echo "netns-cluster: $*" >&2; exit 1; }
log() { echo "netns-cluster: $*" >&2; }
[ "$(id -u)" = 0 ] || die "must run as root (ip netns)"

ns() { echo "$P-$1"; }                       # namespace of a host
veth() { echo "${P}v-$1"; }                  # root-side veth of a host
host_addr() {
    case $1 in
        store) echo "$NET.10" ;; gw1) echo "$NET.11" ;;
        m[0-9]*) echo "$NET.$((10 + ${1#m}))" ;;
        w[0-9]*) echo "$NET.$((20 + ${1#w}))" ;;
        *) die "unknown host $1" ;;
    esac
}
proc_host() {
    case $1 in
        store|store-indexer) echo store ;; gateway|master-1) echo gw1 ;;
        master-[0-9]*) echo "m${1#master-}" ;;
        worker-[0-9]*) echo "w${1#worker-}" ;;
        *) die "unknown process $1" ;;
    esac
}
master_endpoint() { # N
    local h=gw1; [ "$1" = 1 ] || h="m$1"
    echo "tcp://$(host_addr "$h"):$MASTER_PORT"
}
masters_list() {
    local i out=""
    for ((i = 1; i <= NMASTERS; i++)); do out+="${out:+,}$(master_endpoint "$i")"; done
    echo "$out"
}
mongo_uri() { echo "mongodb://$(host_addr store):$STORE_PORT/sked"; }
http_addr() { echo "$(host_addr gw1):$HTTP_PORT"; }

hosts() { [ -f "$DIR/hosts" ] && cat "$DIR/hosts"; }
procs() { [ -f "$DIR/procs" ] && cat "$DIR/procs"; }
pid_of() { [ -f "$DIR/run/$1.pid" ] && cat "$DIR/run/$1.pid"; }
alive() { local p; p=$(pid_of "$1") && [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

save_conf() {
    mkdir -p "$DIR/run" "$DIR/log" "$STORE_DIR"
    {
        echo "SKED_NETNS_PREFIX=$P"; echo "SKED_NETNS_SUBNET=$NET"; echo "SKED_BIN_DIR=$BIN"
        echo "NETNS_MASTERS=$NMASTERS"; echo "SKED_STORE_DIR=$STORE_DIR"; echo "NETNS_WORKERS=$NWORKERS"; echo "FERRETDB=$FERRETDB"
        local v
        for v in $PASS_VARS; do
            [ -n "${!v:-}" ] && printf 'export %s=%q\n' "$v" "${!v}"
        done
    } > "$CONF"
    if [ ! -s "$DIR/jwt-secret" ]; then
        head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/jwt-secret"
        chmod 600 "$DIR/jwt-secret"
    fi
}

# --- network ---------------------------------------------------------------
net_bridge() {
    if ! ip link show "$BR" >/dev/null 2>&1; then
        ip link add "$BR" type bridge || die "cannot create bridge $BR"
        echo "bridge $BR" >> "$DIR/created"
    fi
    ip addr replace "$NET.1/24" dev "$BR"
    ip link set "$BR" up
}

add_host() { # HOST
    local h=$1 n v a
    n=$(ns "$h"); v=$(veth "$h"); a=$(host_addr "$h")
    grep -qx "$h" "$DIR/hosts" 2>/dev/null && ip netns list | grep -qw "$n" && return 0
    ip netns add "$n" || die "cannot create namespace $n"
    echo "$h" >> "$DIR/hosts"
    ip link add "$v" type veth peer name eth0 netns "$n" || die "cannot create veth $v"
    ip link set "$v" master "$BR"
    ip link set "$v" up
    ip -n "$n" link set lo up
    ip -n "$n" addr add "$a/24" dev eth0
    ip -n "$n" link set eth0 up
}

del_host() { # HOST
    local n v
    n=$(ns "$1"); v=$(veth "$1")
    ip link del "$v" 2>/dev/null || true
    ip netns del "$n" 2>/dev/null || true
}

# --- processes -------------------------------------------------------------
wait_tcp() { # HOST PORT WHAT [SECONDS]
    local i
    for ((i = 0; i < ${4:-20} * 10; i++)); do
        ip netns exec "$(ns "$1")" bash -c "exec 3<>/dev/tcp/$(host_addr "$1")/$2" 2>/dev/null && return 0
        sleep 0.1
    done
    die "$3 does not listen on $(host_addr "$1"):$2; see $DIR/log/"
}

# Runs NAME in its host's namespace, in a new session, under a small bash
# supervisor that records the exit status in run/NAME.rc. run/NAME.pid is
# the process itself, so signals reach it directly.
launch() { # NAME
    local name=$1 h n cmd=() envs=()
    h=$(proc_host "$name"); n=$(ns "$h")
    ip netns list | grep -qw "$n" || die "host $h does not exist"
    alive "$name" && { log "$name already runs (pid $(pid_of "$name"))"; return 0; }
    local a; a=$(host_addr "$h")
    envs=(SKED_NODE_ID="$name" SKED_MONGO_URI="$(mongo_uri)" SKED_MASTERS="$(masters_list)"
          SKED_JWT_SECRET="$(cat "$DIR/jwt-secret")")
    case $name in
        store)
            cmd=("$FERRETDB" --handler=sqlite "--sqlite-url=file:$STORE_DIR/" "--listen-addr=$a:$STORE_PORT"
                 "--state-dir=$STORE_DIR" --telemetry=disable --debug-addr=- --log-level=warn)
            envs=() ;;
        store-indexer) cmd=(python3 "$ROOT/deploy/store-indexer.py" "$STORE_DIR"); envs=() ;;
        gateway) cmd=("$BIN/sked-gateway"); envs+=(SKED_HTTP_ADDR="$a:$HTTP_PORT") ;;
        master-*) cmd=("$BIN/sked-master"); envs+=(SKED_MASTER_BIND="tcp://$a:$MASTER_PORT") ;;
        worker-*) cmd=("$BIN/sked-worker") ;;
    esac
    rm -f "$DIR/run/$name.rc" "$DIR/run/$name.pid"
    echo "=== $(date -u +%FT%T.%3NZ) start $name on $h ($a)" >> "$DIR/log/$name.log"
    grep -qx "$name" "$DIR/procs" 2>/dev/null || echo "$name" >> "$DIR/procs"
    # The supervisor: its child gets the pid file; its status the rc file.
    ip netns exec "$n" setsid env "${envs[@]}" bash -c '
        run=$1 out=$2; shift 2
        "$@" >> "$out" 2>&1 < /dev/null &
        echo $! > "$run.pid.tmp" && mv "$run.pid.tmp" "$run.pid"
        child=$!; wait $child; rc=$?
        rm -f "/dev/shm/mongoc-$child"   # mongoc leaves it when killed
        echo $rc > "$run.rc"' sup "$DIR/run/$name" "$DIR/log/$name.log" "${cmd[@]}" \
        > /dev/null 2>&1 < /dev/null &
    local i
    for ((i = 0; i < 50; i++)); do [ -s "$DIR/run/$name.pid" ] && break; sleep 0.05; done
    [ -s "$DIR/run/$name.pid" ] || die "$name did not start"
    case $name in
        store) wait_tcp store "$STORE_PORT" "the store (FerretDB)" ;;
        gateway) wait_tcp gw1 "$HTTP_PORT" "the gateway" ;;
    esac
    log "started $name on $h ($a), pid $(pid_of "$name")"
}

stop_proc() { # NAME SIG [TIMEOUT]
    local name=$1 sig=${2:-TERM} t=${3:-40} p i
    sig=${sig#-}
    rm -f "$DIR/run/$name.rc.note"
    p=$(pid_of "$name") || return 0
    [ -n "$p" ] || return 0
    kill "-$sig" "$p" 2>/dev/null || return 0
    for ((i = 0; i < t * 10; i++)); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$p" 2>/dev/null; then
        log "$name (pid $p) did not exit within ${t}s of SIG$sig; killing it"
        kill -KILL "$p" 2>/dev/null
        echo "did-not-stop" > "$DIR/run/$name.rc.note"
        sleep 0.2
    fi
    # wait for the supervisor to record the status
    for ((i = 0; i < 20; i++)); do [ -f "$DIR/run/$name.rc" ] && break; sleep 0.05; done
    return 0
}

rc_of() { [ -f "$DIR/run/$1.rc" ] && cat "$DIR/run/$1.rc" || echo "?"; }

# --- commands --------------------------------------------------------------
cmd_up() {
    [ -x "$BIN/sked-master" ] || die "no binaries in $BIN (make asan, or set SKED_BIN_DIR)"
    [ -x "$FERRETDB" ] || die "no ferretdb at $FERRETDB"
    if [ -f "$DIR/hosts" ] && [ -s "$DIR/hosts" ]; then
        die "a cluster seems to exist in $DIR (run down first)"
    fi
    mkdir -p "$DIR"
    rm -rf "$DIR/run" "$STORE_DIR" "$DIR/hosts" "$DIR/procs" "$DIR/created"
    mkdir -p "$DIR/log.old"
    [ -d "$DIR/log" ] && mv "$DIR/log" "$DIR/log.old/$(date +%s)" 2>/dev/null
    save_conf
    . "$CONF"
    trap 'if [ "${UP_DONE:-}" != 1 ]; then log "up failed; cleaning up"; cmd_down >&2; fi' EXIT
    set -e
    net_bridge
    local h i
    for h in store gw1; do add_host "$h"; done
    for ((i = 2; i <= NMASTERS; i++)); do add_host "m$i"; done
    for ((i = 1; i <= NWORKERS; i++)); do add_host "w$i"; done
    launch store
    launch store-indexer
    for ((i = 1; i <= NMASTERS; i++)); do launch "master-$i"; done
    for ((i = 1; i <= NWORKERS; i++)); do launch "worker-$i"; done
    launch gateway
    set +e
    UP_DONE=1
    local ok=0
    for ((i = 0; i < 300; i++)); do
        if curl -s --max-time 2 "http://$(http_addr)/api/scheduler/health" | grep -q '"status": *"healthy"'; then
            ok=1; break
        fi
        sleep 0.1
    done
    [ $ok = 1 ] || log "warning: the cluster is not healthy yet: $(curl -s --max-time 2 "http://$(http_addr)/api/scheduler/health")"
    cmd_env
}

cmd_down() {
    local fail=0 name rc
    # Gateway and workers first, then masters, the store last.
    local order=() all
    all=$(procs)
    for name in gateway $(echo "$all" | grep '^worker-') $(echo "$all" | grep '^master-') store-indexer store; do
        echo "$all" | grep -qx "$name" && order+=("$name")
    done
    for name in "${order[@]}"; do
        if alive "$name"; then
            stop_proc "$name" TERM 40
            rc=$(rc_of "$name")
            [ -f "$DIR/run/$name.rc.note" ] && rc="$rc (did not stop on SIGTERM)"
            echo "$name: exit $rc"
            case $rc in 0) ;; *) fail=1 ;; esac
        else
            echo "$name: not running (last exit $(rc_of "$name"))"
        fi
    done
    for name in "${order[@]}"; do
        if [ -f "$DIR/log/$name.log" ] && grep -Eq "$SANITIZER_MARKS" "$DIR/log/$name.log"; then
            echo "$name: SANITIZER REPORT in $DIR/log/$name.log"
            fail=1
        fi
    done
    # Remove what we created, also what a partial `up` left.
    local h
    for h in $(hosts) ; do del_host "$h"; done
    for h in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$P-"); do
        ip netns pids "$h" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
        ip netns del "$h" 2>/dev/null || true
    done
    for h in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep "^${P}v-"); do
        ip link del "$h" 2>/dev/null || true
    done
    ip link del "$BR" 2>/dev/null || true
    rm -f "$DIR/hosts" "$DIR/procs" "$DIR/created"
    return $fail
}

cmd_status() {
    [ -f "$DIR/hosts" ] || { echo "no cluster in $DIR"; return 1; }
    local h name state link
    printf '%-8s %-14s %-10s %s\n' HOST ADDRESS LINK PROCESSES
    for h in $(hosts); do
        link=$(ip -o link show "$(veth "$h")" 2>/dev/null | grep -q 'state UP' && echo up || echo down)
        ip netns list | grep -qw "$(ns "$h")" || link=missing
        local ps=""
        for name in $(procs); do
            [ "$(proc_host "$name")" = "$h" ] || continue
            if alive "$name"; then state="up:$(pid_of "$name")"; else state="down(exit $(rc_of "$name"))"; fi
            ps+="$name=$state "
        done
        printf '%-8s %-14s %-10s %s\n' "$h" "$(host_addr "$h")" "$link" "$ps"
    done
    echo "gateway http://$(http_addr)  store $(mongo_uri)  masters $(masters_list)"
    echo "logs $DIR/log/"
}

cmd_env() {
    echo "SKED_CLUSTER_DIR=$DIR"
    echo "SKED_URL=http://$(http_addr)"
    echo "SKED_MONGO_URI=$(mongo_uri)"
    echo "SKED_MASTERS=$(masters_list)"
    echo "SKED_JWT_SECRET_FILE=$DIR/jwt-secret"
}

cmd_add_worker() { # N
    local n=${1:?usage: add-worker N}
    [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 200 ] || die "N must be 1..200"
    add_host "w$n"
    launch "worker-$n"
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    token)
        SKED_JWT_SECRET=$(cat "$DIR/jwt-secret") "$BIN/sked-gateway" token --sub "${2:-admin}" --role "${3:-admin}" --ttl 86400 ;;
    add-worker) cmd_add_worker "${2:-}" ;;
    start) launch "${2:?usage: start NAME}" ;;
    kill) stop_proc "${2:?usage: kill NAME [-SIG]}" "${3:--TERM}" 40
          echo "${2}: exit $(rc_of "$2")" ;;
    restart) stop_proc "${2:?usage: restart NAME}" TERM 40; echo "${2}: exit $(rc_of "$2")"; launch "$2" ;;
    isolate) ip link set "$(veth "${2:?usage: isolate HOST}")" down || die "no host $2" ;;
    heal) ip link set "$(veth "${2:?usage: heal HOST}")" up || die "no host $2" ;;
    store-stop) stop_proc store TERM 20; echo "store: exit $(rc_of store)" ;;
    store-start) launch store ;;
    pid) pid_of "${2:?usage: pid NAME}" ;;
    hosts) for h in $(hosts); do echo "$h $(host_addr "$h")"; done ;;
    procs) procs ;;
    *) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
esac
