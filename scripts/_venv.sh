# Sourced by scripts/bot and scripts/test: make sure .venv runs Python 3.11+ and holds the project.
#
#   PYTHON=/path/to/python3.12 ./scripts/test   # use this interpreter (the .venv is rebuilt if it differs)
#   VENV=/tmp/venv ./scripts/bot chat           # keep the virtualenv elsewhere
#
# Installs only when pyproject.toml changed since the last install, and always with the [dev]
# extras (pytest, ruff, mypy: a few seconds more on the first run), so whichever of scripts/bot
# and scripts/test runs first, the other never reinstalls. EXTRAS= installs without them.
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS-dev}
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
  echo "== creating $VENV with $_found ($("$_found" -V 2>&1))" >&2
  if ! "$_found" -m venv "$VENV"; then
    rm -rf "$VENV"
    echo "error: $_found cannot create a virtualenv; install its venv module" \
         "(on Debian/Ubuntu: apt-get install python3-venv) or set PYTHON= to another Python 3.11+" >&2
    exit 1
  fi
fi

_hash=$(cksum < pyproject.toml | cut -d' ' -f1)
_stamp="$VENV/.installed-$_hash-${EXTRAS:-none}"
# An install with [dev] also satisfies a caller that needs no extras.
if [ ! -f "$_stamp" ] && ! { [ -z "${EXTRAS:-}" ] && [ -f "$VENV/.installed-$_hash-dev" ]; }; then
  echo "== installing the project${EXTRAS:+ with [$EXTRAS]} into $VENV (log: $VENV/install.log)" >&2
  if ! { "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
         "$VENV/bin/python" -m pip install --disable-pip-version-check -e ".${EXTRAS:+[$EXTRAS]}"; } \
       > "$VENV/install.log" 2>&1; then
    tail -n 30 "$VENV/install.log" >&2
    echo "error: installing the project failed (full log: $VENV/install.log)" >&2
    exit 1
  fi
  # Stamps of an older pyproject.toml go; the other extras' stamp for this one stays.
  for old in "$VENV"/.installed-*; do
    case "$old" in "$VENV/.installed-$_hash-"*) ;; *) rm -f "$old" ;; esac
  done
  touch "$_stamp"
fi
