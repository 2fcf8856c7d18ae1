#!/usr/bin/env bash
# Start the API (gunicorn), the inbox stream server (uvicorn), a Celery worker and Celery
# beat, each under a supervisor that starts it again when it exits (after 1 s, doubling up
# to 30 s while it keeps failing; a run of a minute resets the wait), logging why. The
# others keep serving meanwhile. Ctrl-C (or TERM) stops them all.
set -uo pipefail
BIN=${BIN:-.venv/bin}
PORT=${PORT:-8000}
HOST=${HOST:-127.0.0.1}
RESTART_MAX_SECONDS=${RESTART_MAX_SECONDS:-30}

log() { echo "[beacon $(date +%H:%M:%S)] $*" >&2; }

# supervise NAME COMMAND...: run COMMAND, and again whenever it exits, until stopped.
supervise() {
  local name=$1
  shift
  local child="" delay=1 started status
  trap '[ -n "$child" ] && kill -TERM "$child" 2>/dev/null; [ -n "$child" ] && wait "$child" 2>/dev/null; exit 0' TERM INT
  while true; do
    started=$SECONDS
    "$@" &
    child=$!
    log "$name started (pid $child)"
    wait "$child"
    status=$?
    if ((SECONDS - started >= 60)); then
      delay=1
    fi
    log "$name exited with status $status; starting it again in ${delay}s"
    sleep "$delay" &
    wait $!
    delay=$((delay * 2 > RESTART_MAX_SECONDS ? RESTART_MAX_SECONDS : delay * 2))
  done
}

supervisors=()
stop() {
  trap - EXIT INT TERM
  kill -TERM "${supervisors[@]}" 2>/dev/null
  wait 2>/dev/null
}
trap stop EXIT INT TERM

supervise api "$BIN/gunicorn" config.wsgi:application --bind "$HOST:$PORT" \
  --workers "${WEB_CONCURRENCY:-2}" --access-logfile - &
supervisors+=($!)
# The inbox's server-sent-event streams under ASGI: a stream holds a connection for minutes,
# which would tie up a sync gunicorn worker; uvicorn holds thousands.
supervise streams "$BIN/uvicorn" config.asgi:application --host "$HOST" --port "${STREAM_PORT:-8001}" \
  --no-access-log &
supervisors+=($!)
supervise worker "$BIN/celery" -A config worker --loglevel INFO --concurrency "${CELERY_CONCURRENCY:-2}" \
  -Q "${BEACON_QUEUE:-beacon}" &
supervisors+=($!)
supervise beat "$BIN/celery" -A config beat --loglevel INFO &
supervisors+=($!)

log "API on http://$HOST:$PORT/api/docs/, admin on http://$HOST:$PORT/admin/, inbox streams on http://$HOST:${STREAM_PORT:-8001}/api/v1/inbox/stream/"
wait
