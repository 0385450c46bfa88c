# Sourced by scripts/serve and scripts/test: make .venv with Tidelog installed.
# Usage: bootstrap_venv [EXTRAS]   (EXTRAS like "test")
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TIDELOG_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

bootstrap_venv() {
    local extras="${1:-}"
    if [ ! -x "$VENV/bin/python" ]; then
        if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
            rm -rf "$VENV"
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
                echo "bootstrap: installing python3-venv (Debian splits venv out of python3)" >&2
                apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
                "$PYTHON" -m venv "$VENV"
            else
                echo "bootstrap: '$PYTHON -m venv' failed; install it with: sudo apt-get install python3-venv" >&2
                exit 1
            fi
        fi
    fi
    local spec="$ROOT"
    [ -n "$extras" ] && spec="$ROOT[$extras]"
    local stamp="$VENV/.tidelog-installed-$extras"
    # Install (editable: Python changes need none) only when pyproject.toml, setup.py or a C
    # extension changed since the last install of these extras. Any install has the base
    # dependencies: `serve` (no extras) is satisfied by the one `test` made.
    local current
    for current in "$stamp" "$VENV"/.tidelog-installed-*; do
        if [ -f "$current" ] && [ ! "$ROOT/pyproject.toml" -nt "$current" ] && [ ! "$ROOT/setup.py" -nt "$current" ] \
            && [ ! "$ROOT/src/tidelog/protocol/_recordwalk.c" -nt "$current" ] \
            && [ ! "$ROOT/src/tidelog/storage/_fsyncworker.c" -nt "$current" ] \
            && { [ -z "$extras" ] || [ "$current" = "$stamp" ]; }; then
            return 0
        fi
    done
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$spec" >&2
    touch "$stamp"
}
