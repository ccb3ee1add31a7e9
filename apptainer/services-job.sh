# Body of the seamless-stack services job. seamless-stack prepends the #SBATCH lines and
# these variables (all paths on the cluster's shared file system):
#   SS_NAME SS_STACK_DIR SS_TLS_DIR SS_CONTAINED SS_SIF_HASHSERVER SS_SIF_DATABASE SS_SIF_SCHEDULER SS_SIF_WORKER
#   SS_BUFFER_DIR SS_DATABASE_DIR SS_PORT_START SS_PORT_END SS_SCHEDULER_PORT (may be empty)
#   SS_THREADS (Seamless workers per Dask worker) SS_DASK_THREADS SS_THROTTLE SS_MODE (adaptive | local) SS_LOCAL_WORKERS SS_JOBQUEUE (JSON, adaptive mode)
# It runs hashserver, database and the Dask scheduler as Apptainer containers on this node,
# each started again when it ends (at once, then backing off: 2, 4 ... 60 s while it keeps
# ending within 10 minutes; each time a log line "NAME ended ... starting it again", which
# `seamless-stack status` counts), reports node and ports in $SS_STACK_DIR/services.json, and
# ends (stopping everything, and through the relay every worker job) when the job is cancelled.
set -uo pipefail
node_helper="$SS_STACK_DIR/seamless_stack_node.py"
run_dir=$(mktemp -d "${TMPDIR:-/tmp}/seamless-stack-${SLURM_JOB_ID}.XXXXXX")
pids=()
cleanup() {
    trap - TERM INT EXIT
    echo "[services] stopping" >&2
    kill -TERM "${pids[@]}" 2>/dev/null
    wait
    rm -rf "$run_dir"
}
trap cleanup TERM INT EXIT
log() { echo "[services] $*" >&2; }

ports=$(python3 "$node_helper" ports 4 "$SS_PORT_START" "$SS_PORT_END" "${SS_SCHEDULER_PORT:-}") || exit 1
read -r hashserver_port database_port scheduler_port dashboard_port <<< "$ports"
address=$(python3 "$node_helper" address)
mkdir -p "$SS_BUFFER_DIR" "$SS_DATABASE_DIR"
log "node $(hostname) ($address), ports: hashserver $hashserver_port database $database_port scheduler $scheduler_port dashboard $dashboard_port"

# Every container: a clean environment, no home directory (SS_CONTAINED), the stack's
# credentials read-only at /tls, and only the binds it needs. Secrets stay in files: the
# environment only names their paths.
run() {  # run NAME [APPTAINER-OPTIONS...] SIF COMMAND...: in the background, started again when it ends, stopped with the job
    local name=$1
    shift
    (
        child=""
        trap '[ -n "$child" ] && kill -TERM "$child" 2>/dev/null; wait; exit 0' TERM INT
        delay=0
        while :; do
            started=$SECONDS
            apptainer exec $SS_CONTAINED --bind "$SS_TLS_DIR:/tls:ro" "$@" &
            child=$!
            wait "$child"
            code=$?
            [ $((SECONDS - started)) -ge 600 ] && delay=0  # it ran 10 minutes: not a repeat
            log "$(date -u +%FT%TZ) $name ended (exit $code): starting it again in ${delay}s"
            sleep "$delay" & wait $!
            delay=$((delay == 0 ? 2 : (delay >= 30 ? 60 : delay * 2)))
        done
    ) &
    pids+=($!)
}
# hashserver and database: the stack's secret required, HTTPS with the services' certificate.
export APPTAINERENV_SEAMLESS_STACK_SECRET_FILE=/tls/http.secret
export APPTAINERENV_SEAMLESS_STACK_TLS_CERT=/tls/server.crt APPTAINERENV_SEAMLESS_STACK_TLS_KEY=/tls/server.key
export APPTAINERENV_SSL_CERT_FILE=/tls/bundle.pem
APPTAINERENV_SERVICE_PORT=$hashserver_port run hashserver --bind "$SS_BUFFER_DIR:/buffers" "$SS_SIF_HASHSERVER" seamless-stack-guard hashserver
APPTAINERENV_SERVICE_PORT=$database_port run database --bind "$SS_DATABASE_DIR:/database" --bind "$SS_BUFFER_DIR:/buffers:ro" "$SS_SIF_DATABASE" seamless-stack-guard database

# Dask: mutual TLS with the services' certificate; the dashboard demands a client certificate.
for role in SCHEDULER WORKER CLIENT; do
    export "APPTAINERENV_DASK_DISTRIBUTED__COMM__TLS__${role}__CERT=/tls/server.crt"
    export "APPTAINERENV_DASK_DISTRIBUTED__COMM__TLS__${role}__KEY=/tls/server.key"
done
export APPTAINERENV_DASK_DISTRIBUTED__COMM__TLS__CA_FILE=/tls/ca.crt
export APPTAINERENV_DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True
export APPTAINERENV_DASK_DISTRIBUTED__SCHEDULER__DASHBOARD__TLS__CERT=/tls/server.crt
export APPTAINERENV_DASK_DISTRIBUTED__SCHEDULER__DASHBOARD__TLS__KEY=/tls/server.key
export APPTAINERENV_DASK_DISTRIBUTED__SCHEDULER__DASHBOARD__TLS__CA_FILE=/tls/ca.crt

# What the scheduler preload registers for the workers: the services as other nodes reach them.
export APPTAINERENV_SEAMLESS_STACK_WORKER_BUFFER_URL="https://$address:$hashserver_port"
export APPTAINERENV_SEAMLESS_STACK_WORKER_DATABASE_URL="https://$address:$database_port"
export APPTAINERENV_SEAMLESS_STACK_SEAMLESS_WORKERS=$SS_THREADS
# No root-task queuing: nested transformations' first tasks must reach the workers whose threads
# their parents hold (compose/compose.yaml says more).
export APPTAINERENV_DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION=inf
export APPTAINERENV_SERVICE_PORT=$scheduler_port APPTAINERENV_DASHBOARD_PORT=$dashboard_port
if [ "$SS_MODE" = adaptive ]; then
    # dask-jobqueue in the scheduler container submits worker jobs through this relay.
    mkdir -p "$SS_STACK_DIR/workers"
    (cd "$SS_STACK_DIR/workers" && exec python3 "$node_helper" relay "$run_dir/relay.sock" "$SS_NAME") &
    pids+=($!)
    for _ in $(seq 50); do [ -S "$run_dir/relay.sock" ] && break; sleep 0.1; done
    # A file, not a variable: Apptainer would expand the $TMPDIR in it inside the container.
    printf '%s\n' "$SS_JOBQUEUE" > "$run_dir/jobqueue.json"
    # `seamless-stack scale` writes new adaptive bounds here; a new services job starts from its own.
    mkdir -p "$SS_STACK_DIR/control" && rm -f "$SS_STACK_DIR/control/adapt.json"
    APPTAINERENV_SEAMLESS_STACK_HOLD_PORT=$address:$scheduler_port \
    APPTAINERENV_SEAMLESS_STACK_RELAY=/relay/relay.sock \
    APPTAINERENV_SEAMLESS_STACK_JOBQUEUE=/relay/jobqueue.json \
    APPTAINERENV_SEAMLESS_STACK_BOUNDS=/control/adapt.json \
    APPTAINERENV_SEAMLESS_STACK_NODE_ADDRESS=$address \
        run scheduler --bind "$run_dir:/relay" --bind "$SS_STACK_DIR/workers" --bind "$SS_STACK_DIR/control:/control:ro" \
        "$SS_SIF_SCHEDULER" \
        python3 /opt/seamless-stack/seamless_stack_slurm.py  # (dask-jobqueue checks its log folder exists)
else
    APPTAINERENV_SEAMLESS_STACK_HOLD_PORT=0.0.0.0:$scheduler_port \
        run scheduler "$SS_SIF_SCHEDULER" dask scheduler --protocol tls --host 0.0.0.0 --port "$scheduler_port" \
        --dashboard-address ":$dashboard_port" --preload /opt/seamless-stack/seamless_stack_preload.py
    for _ in $(seq "$SS_LOCAL_WORKERS"); do  # the single-node variant: workers in this job
        APPTAINERENV_SEAMLESS_WORKER_TRANSFORMATION_THROTTLE=$SS_THROTTLE \
            run worker "$SS_SIF_WORKER" dask worker "tls://$address:$scheduler_port" --nthreads "$SS_DASK_THREADS" --nworkers 1 --no-dashboard --dashboard-address 127.0.0.1:0
    done
fi

printf '{"job_id": "%s", "node": "%s", "address": "%s", "ports": {"hashserver": %d, "database": %d, "scheduler": %d, "dashboard": %d}}\n' \
    "$SLURM_JOB_ID" "$(hostname)" "$address" "$hashserver_port" "$database_port" "$scheduler_port" "$dashboard_port" \
    > "$SS_STACK_DIR/services.json.tmp"
mv "$SS_STACK_DIR/services.json.tmp" "$SS_STACK_DIR/services.json"

wait -n "${pids[@]}"
log "a service's keeper ended (exit $?): stopping the stack"
exit 1
