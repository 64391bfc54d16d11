#!/bin/sh
# The decision service from the shell. Start it first, e.g.:
#   ctxbudget serve --policies policies/products --audit-log audit/decisions.jsonl --tokens tokens.json
# then: CTXBUDGET_TOKEN=... sh examples/clients/curl.sh [BASE_URL] [PRODUCT]
set -eu
BASE=${1:-http://127.0.0.1:8181}
PRODUCT=${2:-support-assistant}
AUTH="Authorization: Bearer ${CTXBUDGET_TOKEN:-}"

curl -fsS "$BASE/health"; echo
curl -fsS -H "$AUTH" "$BASE/v1/policies"; echo
# A decision: 200 only once its audit record is fsynced; 409 when the hard rules cannot all hold.
curl -sS -H "$AUTH" -H 'Content-Type: application/json' "$BASE/v1/decide/$PRODUCT" -d '{
  "request_id": "curl-example-1", "requested_by": "shell",
  "candidates": [
    {"source_id": "kb#refunds", "content": "Refunds are accepted within 30 days.", "relevance_score": 0.92},
    {"source_id": "kb#shipping", "content": "Shipping takes a week.", "relevance_score": 0.41}
  ]}'; echo
curl -fsS "$BASE/metrics" | grep -E '^ctxbudget_(decisions_total|audit_append_seconds_count)' || true
