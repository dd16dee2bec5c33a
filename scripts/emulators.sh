# The AWS emulators the tests talk to over the wire (ARCHITECTURE.md, "AWS in tests"), sourced by
# scripts/test:
#   emulators_install   npm packages into .emulators/node_modules (pinned; reinstalled only when
#                       the pins change) and the Python tools, moto among them
#   emulators_start     starts them and moto server (from the Python tools' venv, $venv) on free
#                       ports of 127.0.0.1, waits until they answer, exports their endpoints
#                       (SHOPLAKE_TEST_KINESALITE, SHOPLAKE_TEST_KINESIS_MOCK, SHOPLAKE_TEST_MOTO) and
#                       arranges for emulators_stop to run when the calling script exits
#   emulators_stop      stops what emulators_start started, by PID
# Logs: .emulators/logs/.
# Needs node and npm (node 20 here), python3 with venv, and the npm and PyPI registries.

# moto server comes from PyPI, in the Python tools' virtual environment.
# shellcheck source=scripts/python-tools.sh
source scripts/python-tools.sh

EMULATORS_DIR=.emulators
# kinesalite: the Kinesis data path (fast, enforces AWS limits). kinesis-local (kinesis-mock):
# resharding and the wider API.
EMULATORS_NPM_PINS="kinesalite@3.3.3 kinesis-local@0.6.2"
EMULATOR_PIDS=()

emulators_install() {
    python_tools_install
    local stamp="$EMULATORS_DIR/node_modules/.shoplake-pins"
    if [ "$(cat "$stamp" 2>/dev/null)" = "$EMULATORS_NPM_PINS" ]; then
        return 0
    fi
    echo "scripts/test: installing $EMULATORS_NPM_PINS into $EMULATORS_DIR/node_modules" >&2
    mkdir -p "$EMULATORS_DIR"
    rm -rf "$EMULATORS_DIR/node_modules" "$EMULATORS_DIR/package.json" "$EMULATORS_DIR/package-lock.json"
    echo '{ "private": true, "description": "AWS emulators of the shoplake tests (scripts/emulators.sh)" }' \
        > "$EMULATORS_DIR/package.json"
    # No install scripts: kinesalite's optional leveldown build is not used (it runs in memory).
    npm install --prefix "$EMULATORS_DIR" --save-exact --ignore-scripts --no-audit --no-fund \
        --loglevel=error $EMULATORS_NPM_PINS >&2
    # kinesis-local binds every interface with no option to change it: bind it to loopback.
    local main="$EMULATORS_DIR/node_modules/kinesis-local/main.js"
    sed -i 's/Host$().em("0\.0\.0\.0")/Host$().em("127.0.0.1")/' "$main"
    if grep -q 'Host$().em("0\.0\.0\.0")' "$main" || ! grep -q 'Host$().em("127\.0\.0\.1")' "$main"; then
        echo "scripts/test: could not bind kinesis-local to 127.0.0.1 (main.js changed?)" >&2
        return 1
    fi
    echo "$EMULATORS_NPM_PINS" > "$stamp"
}

emulators_stop() {
    local pid
    for pid in "${EMULATOR_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${EMULATOR_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    EMULATOR_PIDS=()
}

emulators_start() {
    local helper="scripts/emulators.js" logs="$EMULATORS_DIR/logs"
    export NODE_PATH="$PWD/$EMULATORS_DIR/node_modules"
    mkdir -p "$logs"
    trap emulators_stop EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    local kinesalite_port
    kinesalite_port=$(node "$helper" free-port)
    node "$helper" kinesalite "$kinesalite_port" > "$logs/kinesalite.log" 2>&1 &
    EMULATOR_PIDS+=($!)

    local mock_port mock_tls_port
    mock_port=$(node "$helper" free-port)
    mock_tls_port=$(node "$helper" free-port)
    local pkg="$EMULATORS_DIR/node_modules/kinesis-local"
    KINESIS_MOCK_CERT_PATH="$PWD/$pkg/server.json" \
        KINESIS_MOCK_PLAIN_PORT="$mock_port" \
        KINESIS_MOCK_TLS_PORT="$mock_tls_port" \
        SHARD_LIMIT=10000 \
        CREATE_STREAM_DURATION=50ms DELETE_STREAM_DURATION=50ms \
        SPLIT_SHARD_DURATION=50ms MERGE_SHARDS_DURATION=50ms UPDATE_SHARD_COUNT_DURATION=50ms \
        LOG_LEVEL=WARN \
        node "$pkg/main.js" > "$logs/kinesis-local.log" 2>&1 &
    EMULATOR_PIDS+=($!)

    # moto server (S3, Firehose, DynamoDB), from the Python tools' virtual environment.
    local moto_port
    moto_port=$(node "$helper" free-port)
    "$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" > "$logs/moto.log" 2>&1 &
    EMULATOR_PIDS+=($!)

    export SHOPLAKE_TEST_KINESALITE="http://127.0.0.1:$kinesalite_port"
    export SHOPLAKE_TEST_KINESIS_MOCK="http://127.0.0.1:$mock_port"
    export SHOPLAKE_TEST_MOTO="http://127.0.0.1:$moto_port"
    local url
    for url in "$SHOPLAKE_TEST_KINESALITE" "$SHOPLAKE_TEST_KINESIS_MOCK" "$SHOPLAKE_TEST_MOTO"; do
        if ! node "$helper" wait "$url" 60; then
            echo "scripts/test: an emulator did not start; logs in $logs:" >&2
            tail -n 20 "$logs"/*.log >&2
            return 1
        fi
    done
    # A free port could have been taken between choosing and binding it: then the answer above
    # came from someone else, and our emulator has exited.
    local pid
    for pid in "${EMULATOR_PIDS[@]}"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "scripts/test: an emulator exited after starting; logs in $logs:" >&2
            tail -n 20 "$logs"/*.log >&2
            return 1
        fi
    done
    echo "scripts/test: kinesalite on $SHOPLAKE_TEST_KINESALITE, kinesis-local on $SHOPLAKE_TEST_KINESIS_MOCK, moto on $SHOPLAKE_TEST_MOTO" >&2
}
