#!/usr/bin/env bash
# Start the API (gunicorn), a Celery worker and Celery beat; stop all three together.
set -euo pipefail
BIN=${BIN:-.venv/bin}
PORT=${PORT:-8000}
HOST=${HOST:-127.0.0.1}

pids=()
cleanup() {
  trap - EXIT INT TERM
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"$BIN/gunicorn" config.wsgi:application --bind "$HOST:$PORT" --workers "${WEB_CONCURRENCY:-2}" \
  --access-logfile - &
pids+=($!)
"$BIN/celery" -A config worker --loglevel INFO --concurrency "${CELERY_CONCURRENCY:-2}" -Q "${BEACON_QUEUE:-beacon}" &
pids+=($!)
"$BIN/celery" -A config beat --loglevel INFO &
pids+=($!)

echo "Beacon: API on http://$HOST:$PORT/api/docs/, admin on http://$HOST:$PORT/admin/"
# Stop everything as soon as any one of the three exits.
wait -n
