#!/usr/bin/env bash
# Start `productcat serve` in the background (pid in .run/api.pid, log in .run/api.log),
# wait until /ready, then print a curl example and run it, so the example shown is one that works.
set -euo pipefail
port="${API_PORT:-8000}"
url="http://127.0.0.1:${port}"
mkdir -p .run
if [[ -f .run/api.pid ]] && kill -0 "$(cat .run/api.pid)" 2>/dev/null; then
    echo "API already running (pid $(cat .run/api.pid)); restarting it to serve the current champion"
    kill "$(cat .run/api.pid)" && sleep 2
fi
nohup productcat serve --port "${port}" > .run/api.log 2>&1 &
echo $! > .run/api.pid
for _ in $(seq 180); do
    if curl -sf "${url}/ready" > /dev/null; then break; fi
    if ! kill -0 "$(cat .run/api.pid)" 2>/dev/null; then echo "the API exited: see .run/api.log"; tail -20 .run/api.log; exit 1; fi
    sleep 1
done
curl -sf "${url}/ready" > /dev/null || { echo "the API is not ready after 180 s: see .run/api.log"; exit 1; }

body='{"title": "Turtle Check Men Navy Blue Shirt", "brand": "Turtle", "price": "$24.99"}'
echo
echo "API on ${url} (Swagger: ${url}/docs, log: .run/api.log, stop: make stop). Try:"
echo
echo "  curl -s -X POST '${url}/predict?top_k=3' -H 'Content-Type: application/json' -d '${body}'"
echo
curl -s -X POST "${url}/predict?top_k=3" -H 'Content-Type: application/json' -d "${body}"
echo
