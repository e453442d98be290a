# Sourced by scripts/bot, scripts/test and scripts/upgrade: make sure .venv runs Python 3.11+ and
# holds exactly what uv.lock says (the project, its dependencies and the dev tools).
#
#   PYTHON=/path/to/python3.12 ./scripts/test   # use this interpreter (the .venv is rebuilt if it differs)
#   VENV=/tmp/venv ./scripts/bot chat           # keep the virtualenv elsewhere
#   UV=/path/to/uv ./scripts/test               # use this uv instead of the pinned one in .uv/
#
# uv itself is installed once into .uv/ from scripts/uv-requirements.txt (version and hashes
# pinned); it then installs from uv.lock with `uv sync --locked`, which refuses to run when
# pyproject.toml and the lock disagree. It syncs only when the lock changed since the last sync,
# so scripts/bot starts at once; one install (with the dev tools) serves all the scripts.
VENV=${VENV:-.venv}
MIN_PYTHON=3.11

# Prints the X.Y version of the interpreter $1 if it is at least $MIN_PYTHON; fails otherwise.
_python_ok() {
  "$1" -c 'import sys; v = sys.version_info; sys.exit(0 if v >= (3, 11) else 1)' 2>/dev/null &&
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'
}

_find_python() {
  if [ -n "${PYTHON:-}" ]; then
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
      echo "error: PYTHON=$PYTHON is not a command; point it at a Python $MIN_PYTHON or newer" >&2
      return 1
    fi
    if ! _python_ok "$PYTHON" >/dev/null; then
      echo "error: PYTHON=$PYTHON is $("$PYTHON" -V 2>&1); this project needs Python $MIN_PYTHON or newer" >&2
      return 1
    fi
    echo "$PYTHON"
    return 0
  fi
  for candidate in python3 python3.13 python3.12 python3.11 python; do
    if command -v "$candidate" >/dev/null 2>&1 && _python_ok "$candidate" >/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "error: no Python $MIN_PYTHON or newer found (tried python3, python3.13, python3.12, python3.11," \
       "python); install one (e.g. apt-get install python3.11-venv, or pyenv install 3.11)" \
       "or name it with PYTHON=/path/to/python3.11" >&2
  return 1
}

_venv_version=""
if [ -e "$VENV/pyvenv.cfg" ]; then
  _venv_version=$(_python_ok "$VENV/bin/python" || true)
  if [ -z "$_venv_version" ]; then
    _found=$(_find_python) || exit 1
    echo "== $VENV does not run Python $MIN_PYTHON+ ($("$VENV/bin/python" -V 2>&1 || echo 'its Python is gone')):" \
         "rebuilding it with $_found" >&2
    rm -rf "$VENV"
  elif [ -n "${PYTHON:-}" ]; then
    _found=$(_find_python) || exit 1
    _wanted=$(_python_ok "$_found")
    if [ "$_wanted" != "$_venv_version" ]; then
      echo "== $VENV runs Python $_venv_version but PYTHON=$PYTHON is $_wanted: rebuilding it" >&2
      rm -rf "$VENV"
    fi
  fi
elif [ -e "$VENV" ]; then
  echo "error: $VENV exists but is not a virtualenv (no pyvenv.cfg); move it away or set VENV=" >&2
  exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  _found=${_found:-$(_find_python)} || exit 1
fi

# ---- uv, pinned --------------------------------------------------------------------------
_uv_wanted=$(sed -n 's/^uv==\([0-9.]*\).*/\1/p' scripts/uv-requirements.txt)
if [ -z "${UV:-}" ]; then
  UV="$PWD/.uv/bin/uv"
  if [ "$("$UV" --version 2>/dev/null | cut -d' ' -f2)" != "$_uv_wanted" ]; then
    _found=${_found:-$(_find_python)} || exit 1
    echo "== installing uv $_uv_wanted into .uv (log: .uv.log)" >&2
    rm -rf .uv
    if ! { "$_found" -m venv .uv &&
           .uv/bin/python -m pip install --disable-pip-version-check --require-hashes --no-deps \
             -r scripts/uv-requirements.txt; } > .uv.log 2>&1; then
      tail -n 20 .uv.log >&2
      echo "error: installing uv failed (full log: .uv.log); is the package index reachable?" >&2
      exit 1
    fi
  fi
fi

# ---- the virtualenv, from the lock --------------------------------------------------------
# The stamp names the lock and the project file: a change to either syncs again.
# SKIP_SYNC=1 (scripts/upgrade) stops before it, with uv ready.
_hash=$(cat uv.lock pyproject.toml | cksum | cut -d' ' -f1)
if [ "${SKIP_SYNC:-}" != 1 ] && [ ! -f "$VENV/.synced-$_hash" ]; then
  # uv makes the virtualenv if there is none, with the Python found above (never one it would
  # download); an existing one keeps its own.
  _python=()
  [ -x "$VENV/bin/python" ] || _python=(--python "$(command -v "$_found")")
  echo "== installing from uv.lock into $VENV (log: $VENV.log)" >&2
  if ! UV_PROJECT_ENVIRONMENT="$VENV" UV_PYTHON_DOWNLOADS=never \
       "$UV" sync --locked "${_python[@]}" > "$VENV.log" 2>&1; then
    tail -n 20 "$VENV.log" >&2
    if grep -q "needs to be updated" "$VENV.log"; then
      echo "error: pyproject.toml and uv.lock disagree: run ./scripts/upgrade (or $UV lock) and commit uv.lock" >&2
    else
      echo "error: installing from uv.lock failed (full log: $VENV.log)" >&2
    fi
    exit 1
  fi
  rm -f "$VENV"/.synced-*
  touch "$VENV/.synced-$_hash"
fi
# Never a Python of uv's own download: the machine's, found above.
export UV UV_PYTHON_DOWNLOADS=never
