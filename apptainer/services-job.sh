# Body of the seamless-stack services job. seamless-stack prepends the #SBATCH lines and
# these variables (all paths on the cluster's shared file system):
#   SS_NAME SS_STACK_DIR SS_SIF_HASHSERVER SS_SIF_DATABASE SS_SIF_SCHEDULER SS_SIF_WORKER
#   SS_BUFFER_DIR SS_DATABASE_DIR SS_PORT_START SS_PORT_END SS_SCHEDULER_PORT (may be empty)
#   SS_THREADS SS_MODE (adaptive | local) SS_LOCAL_WORKERS SS_JOBQUEUE (JSON, adaptive mode)
# It runs hashserver, database and the Dask scheduler as Apptainer containers on this node,
# reports node and ports in $SS_STACK_DIR/services.json, and ends (stopping everything, and
# through the relay every worker job) when any service ends or the job is cancelled.
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

run() {  # run IMAGE-SIF [apptainer options...] -- the image's own command, with a clean environment
    apptainer run --cleanenv "$@" &
    pids+=($!)
}
APPTAINERENV_SERVICE_PORT=$hashserver_port run --bind "$SS_BUFFER_DIR:/buffers" "$SS_SIF_HASHSERVER"
APPTAINERENV_SERVICE_PORT=$database_port run --bind "$SS_DATABASE_DIR:/database" "$SS_SIF_DATABASE"

# What the scheduler preload registers for the workers: the services as other nodes reach them.
export APPTAINERENV_SEAMLESS_STACK_WORKER_BUFFER_URL="http://$address:$hashserver_port"
export APPTAINERENV_SEAMLESS_STACK_WORKER_DATABASE_URL="http://$address:$database_port"
export APPTAINERENV_SEAMLESS_STACK_SEAMLESS_WORKERS=$SS_THREADS
export APPTAINERENV_SERVICE_PORT=$scheduler_port APPTAINERENV_DASHBOARD_PORT=$dashboard_port
if [ "$SS_MODE" = adaptive ]; then
    # dask-jobqueue in the scheduler container submits worker jobs through this relay.
    mkdir -p "$SS_STACK_DIR/workers"
    (cd "$SS_STACK_DIR/workers" && exec python3 "$node_helper" relay "$run_dir/relay.sock" "$SS_NAME") &
    pids+=($!)
    for _ in $(seq 50); do [ -S "$run_dir/relay.sock" ] && break; sleep 0.1; done
    # A file, not a variable: Apptainer would expand the $TMPDIR in it inside the container.
    printf '%s\n' "$SS_JOBQUEUE" > "$run_dir/jobqueue.json"
    APPTAINERENV_SEAMLESS_STACK_RELAY=/relay/relay.sock \
    APPTAINERENV_SEAMLESS_STACK_JOBQUEUE=/relay/jobqueue.json \
    APPTAINERENV_SEAMLESS_STACK_NODE_ADDRESS=$address \
        apptainer exec --cleanenv --bind "$run_dir:/relay" "$SS_SIF_SCHEDULER" \
        python3 /opt/seamless-stack/seamless_stack_slurm.py &
    pids+=($!)
else
    run "$SS_SIF_SCHEDULER"
    for _ in $(seq "$SS_LOCAL_WORKERS"); do  # the single-node variant: workers in this job
        apptainer exec --cleanenv "$SS_SIF_WORKER" \
            dask worker "tcp://$address:$scheduler_port" --nthreads "$SS_THREADS" --nworkers 1 &
        pids+=($!)
    done
fi

printf '{"job_id": "%s", "node": "%s", "address": "%s", "ports": {"hashserver": %d, "database": %d, "scheduler": %d, "dashboard": %d}}\n' \
    "$SLURM_JOB_ID" "$(hostname)" "$address" "$hashserver_port" "$database_port" "$scheduler_port" "$dashboard_port" \
    > "$SS_STACK_DIR/services.json.tmp"
mv "$SS_STACK_DIR/services.json.tmp" "$SS_STACK_DIR/services.json"

wait -n "${pids[@]}"
log "a service ended (exit $?): stopping the stack"
exit 1
