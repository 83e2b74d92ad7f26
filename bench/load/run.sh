#!/usr/bin/env bash
# Load test on loopback: gunicorn and one Celery worker (with the beat sweep) on
# PostgreSQL and Redis. Two wrk processes keep CONNECTIONS connections each on the
# runs API and on the runs page for DURATION seconds, while a loop submits a run
# every SUBMIT_INTERVAL seconds for the worker to execute.
#
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/flowsite_load \
#   CELERY_BROKER_URL=redis://127.0.0.1:6379/6 bench/load/run.sh
#
# The database is migrated, not emptied; use one that contains nothing else.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
: "${DATABASE_URL:?Set DATABASE_URL to a PostgreSQL database used only by the load test.}"
: "${CELERY_BROKER_URL:?Set CELERY_BROKER_URL, for example redis://127.0.0.1:6379/6.}"
PORT=${PORT:-18770}
DURATION=${DURATION:-150}
CONNECTIONS=${CONNECTIONS:-25}
WEB_WORKERS=${WEB_WORKERS:-4}
SUBMIT_INTERVAL=${SUBMIT_INTERVAL:-2}
export OUT=${OUT:-$(mktemp -d /tmp/flowsite-load-XXXXXX)}
export DATABASE_URL CELERY_BROKER_URL
export FLOWSITE_VAR_DIR="$OUT/var" FLOWSITE_API_URL="http://127.0.0.1:$PORT"
export FLOWSITE_HEARTBEAT_INTERVAL=5
mkdir -p "$FLOWSITE_VAR_DIR"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

cd "$ROOT"
"$PYTHON" manage.py migrate --noinput -v0
eval "$("$PYTHON" "$HERE/prepare.py")"

"$PYTHON" -m gunicorn flowsite.wsgi:application -w "$WEB_WORKERS" -b "127.0.0.1:$PORT" \
  --log-level warning >"$OUT/gunicorn.log" 2>&1 &
pids+=($!)
"$PYTHON" -m celery -A flowsite.celery_app worker -B -S celery.beat:PersistentScheduler \
  -s "$OUT/beat-schedule" -c 2 -n "load@%h" --without-gossip --without-mingle \
  -l warning >"$OUT/worker.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break
  sleep 0.2
done

export FLOWSITE_URL="http://127.0.0.1:$PORT" FLOWSITE_TOKEN="$LOAD_TOKEN"
export FLOWSITE_HOME="$OUT/home" PYTHONPATH="$ROOT"
cp "$HERE/load_flow.py" "$OUT/load_flow.py"
# A few runs first, so the list and the page have rows to render.
for _ in 1 2 3 4 5; do "$PYTHON" "$OUT/load_flow.py" run --detach --tag warmup >/dev/null; done

deadline=$(( $(date +%s) + DURATION ))
bash "$HERE/submit_loop.sh" "$OUT/load_flow.py" "$SUBMIT_INTERVAL" "$deadline" \
  >"$OUT/submissions.txt" &
submitter=$!

LOAD_AUTHORIZATION="Bearer $LOAD_TOKEN" wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" \
  --timeout 10s -s "$HERE/report.lua" "http://127.0.0.1:$PORT/api/v1/runs?page_size=50" \
  >"$OUT/wrk-api.txt" 2>&1 &
api=$!
LOAD_COOKIE="sessionid=$LOAD_SESSION" wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" \
  --timeout 10s -s "$HERE/report.lua" "http://127.0.0.1:$PORT/" \
  >"$OUT/wrk-page.txt" 2>&1 &
page=$!
wait "$api" "$page" "$submitter"

# Give the worker time to finish what was submitted, then count run states.
sleep "${DRAIN_SECONDS:-60}"
"$PYTHON" manage.py shell -c "
from django.db.models import Count
from runs.models import Run
print('RUNS', dict(Run.objects.filter(flow__name='LoadFlow').values_list('status').annotate(n=Count('id'))))
" >"$OUT/runs.txt"

{
  echo "duration_s=$DURATION connections_per_target=$CONNECTIONS gunicorn_workers=$WEB_WORKERS"
  echo "api  $(grep RESULT "$OUT/wrk-api.txt")"
  echo "page $(grep RESULT "$OUT/wrk-page.txt")"
  echo "submissions ok=$(grep -c '^submitted' "$OUT/submissions.txt" || true)" \
       "failed=$(grep -c 'submit failed' "$OUT/submissions.txt" || true)"
  cat "$OUT/runs.txt"
  echo "gunicorn errors: $(grep -ci 'error' "$OUT/gunicorn.log" || true)"
} | tee "$OUT/summary.txt"
echo "Output folder: $OUT"
