# Python tools from PyPI in a virtual environment of the checkout, sourced by scripts/test and the
# bench scripts: the other engines that must read the lake (deltalake, DuckDB) and an official
# Segment SDK. python_tools_install installs them into .emulators/venv (again only when
# scripts/requirements-test.txt changes) and sets $venv.
venv=.emulators/venv

python_tools_install() {
    if ! cmp -s scripts/requirements-test.txt "$venv/.installed" 2>/dev/null; then
        echo "installing the Python tools into $venv" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
        cp scripts/requirements-test.txt "$venv/.installed"
    fi
}
