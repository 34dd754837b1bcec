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
# Reinstall when the build inputs changed (C sources, build script, dependencies).
inputs=$(cat "$ROOT/pyproject.toml" "$ROOT/setup.py" "$ROOT"/native/*.c "$ROOT"/native/*.h "$ROOT/native/_build.py" 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$inputs" ] || ! "$VENV/bin/python" -c "import rxkernel.native" 2>/dev/null; then
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q -e "$ROOT[test]"
    echo "$inputs" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
