# Sourced by the scripts in this folder: make sure .venv exists and holds p2pnode.
# p2pnode is installed editable, so code changes need no reinstall; a newer pyproject.toml
# (new dependencies) or an install that failed half-way triggers one.
ensure_venv() {
    local extras=${1:-}
    local marker=".venv/.p2pnode-installed$extras"
    if [ ! -x .venv/bin/python ]; then
        "${PYTHON:-python3}" -m venv .venv
    fi
    if [ ! -e "$marker" ] || [ pyproject.toml -nt "$marker" ]; then
        rm -f "$marker"
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".$extras"
        touch "$marker"
    fi
}
