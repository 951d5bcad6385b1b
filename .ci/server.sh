# Sourced by .ci/schemathesis and .ci/generated-client: builds target/debug/lockerhub and runs it
# on a fresh SQLite file on 127.0.0.1 (a free port), with an admin key made by the CLI, until
# the sourcing script exits. Sets BIN, WORK, PORT, BASE and KEY.
#
# ST_KEEP_LOG=<file> keeps the server's log there when the script ends.

cargo build --quiet --bin lockerhub
BIN=target/debug/lockerhub

WORK=$(mktemp -d "${TMPDIR:-/tmp}/lockerhub-ci.XXXXXX")
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [ -n "${ST_KEEP_LOG:-}" ]; then cp "$WORK/server.log" "$ST_KEEP_LOG" || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
export LOCKERHUB_DATA_DIR="$WORK"
export LOCKERHUB_DATABASE_URL="sqlite://$WORK/lockerhub.db"
export LOCKERHUB_HOST=127.0.0.1
export LOCKERHUB_PORT="$PORT"
export LOCKERHUB_LOG_LEVEL="${LOCKERHUB_LOG_LEVEL:-warn}"
# Test tools send thousands of deliberately unauthenticated requests from this one address; at
# the default limit they would turn into 429s (the limit has its own test in tests/api).
export LOCKERHUB_AUTH_FAILURES_PER_MINUTE=1000000
unset DATABASE_URL LOCKERHUB_CONFIG

KEY=$("$BIN" create-admin-key --name ci 2>"$WORK/create-admin-key.log") \
    || { cat "$WORK/create-admin-key.log" >&2; exit 1; }
"$BIN" serve >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
# Up to 60 s: a loaded 2-core machine starts it slowly. (The port was free a moment ago; if
# something took it meanwhile, the server's log says so.)
up=
for _ in $(seq 1 600); do
    curl -fsS "$BASE/healthz" >/dev/null 2>&1 && { up=1; break; }
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
[ -n "$up" ] || { echo "the server did not come up" >&2; cat "$WORK/server.log" >&2; exit 1; }

# A Python venv with the pins of $1 (a requirements file), at $2; (re)made when the pins change.
venv_with() {
    if ! cmp -s "$1" "$2/requirements.txt" 2>/dev/null; then
        rm -rf "$2"
        python3 -m venv "$2"
        "$2/bin/pip" install --quiet --disable-pip-version-check -r "$1"
        cp "$1" "$2/requirements.txt"
    fi
}
