#!/usr/bin/env bash
# Submit a small flow every INTERVAL seconds until DEADLINE (epoch seconds), so the
# worker executes runs while wrk reads. Prints one line per submission.
set -u
FLOW_FILE="$1"; INTERVAL="$2"; DEADLINE="$3"
while [ "$(date +%s)" -lt "$DEADLINE" ]; do
  "$PYTHON" "$FLOW_FILE" run --detach --tag load >/dev/null 2>>"$OUT/submit.err" \
    && echo "submitted" || echo "submit failed"
  sleep "$INTERVAL"
done
