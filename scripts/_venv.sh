# Sourced by scripts/demo and scripts/test: make .venv (once) with rxkernel installed editable,
# which builds the C extension. Needs only Python 3.11+ and gcc.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
stamp="$VENV/.rxkernel-installed"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
# Reinstall when the build inputs changed (C sources and headers in every subfolder of native/,
# the build scripts, dependencies). Names are hashed with contents, so moving a file counts; the
# list is found, not written out, so a new subfolder cannot be forgotten. _rxnative.c is cffi's
# output, not an input.
build_inputs() {
    (cd "$ROOT" && { echo pyproject.toml setup.py native/_build.py native/_build_vdso.py
        find native -type f \( -name '*.c' -o -name '*.h' -o -name '*.map' \) ! -path native/_rxnative.c | LC_ALL=C sort; })
}
inputs=$(for f in $(build_inputs); do echo "== $f"; cat "$ROOT/$f"; done 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$inputs" ] || ! "$VENV/bin/python" -c "import rxkernel.native" 2>/dev/null; then
    echo "setting up $VENV (pip install -e .[test], builds the C extension)..." >&2
    log="$VENV/install.log"
    # The build backend is chatty even with -q; keep its output in a log, show it on failure.
    if ! { "$VENV/bin/python" -m pip install -q --upgrade pip && "$VENV/bin/python" -m pip install -q -e "$ROOT[test]"; } >"$log" 2>&1; then
        cat "$log" >&2
        echo "setup failed; the log is $log" >&2
        exit 1
    fi
    echo "$inputs" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
