# Sourced by the scripts in this folder: make sure .venv exists and holds p2pnode.
# p2pnode is installed editable, so code changes need no reinstall; a newer pyproject.toml
# (new dependencies) or an install that failed half-way triggers one.
BUILD_HINT="chiavdf has wheels for CPython 3.11-3.14 on Linux x86_64/aarch64 (glibc 2.28+), macOS and Windows x64; elsewhere pip builds it and needs a C++ compiler, cmake and GMP (Debian/Ubuntu: apt install build-essential cmake libgmp-dev)"

ensure_venv() {
    local extras=${1:-}
    local marker=".venv/.p2pnode-installed$extras"
    local python=${PYTHON:-python3}
    if [ ! -x .venv/bin/python ]; then
        if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "p2pnode needs Python 3.11 or newer; $python is not (set PYTHON=python3.11)" >&2
            return 1
        fi
        "$python" -m venv .venv
    fi
    if [ ! -e "$marker" ] || [ pyproject.toml -nt "$marker" ]; then
        rm -f "$marker"
        if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".$extras"; then
            echo "installing p2pnode into .venv failed (pip said why above); $BUILD_HINT" >&2
            return 1
        fi
        touch "$marker"
    fi
}
