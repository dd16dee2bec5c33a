# Programs from Debian's packages the test suite drives, sourced by scripts/test: the Postgres
# clients nobody on the project wrote (tests/it/pg.rs) — psql, and pgjdbc run by Java — and
# openssl, which makes the test certificate of the TLS listener; Chromium, the real browser the
# dashboards are tested in (tests/dashboards_in_chromium.py). Installed only when missing.

debian_tools_install() {
    local need=()
    command -v psql >/dev/null || need+=(postgresql-client)
    [ -f /usr/share/java/postgresql.jar ] || need+=(libpostgresql-jdbc-java)
    command -v java >/dev/null || need+=(default-jre-headless)
    command -v openssl >/dev/null || need+=(openssl)
    command -v chromium >/dev/null || need+=(chromium)
    if [ ${#need[@]} -gt 0 ]; then
        echo "installing ${need[*]} from Debian" >&2
        local sudo=
        [ "$(id -u)" -ne 0 ] && sudo=sudo
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
    fi
}
