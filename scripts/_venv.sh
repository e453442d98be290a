# Sourced by scripts/bot and scripts/test: make .venv and install the project into it.
# Installs only when pyproject.toml changed since the last install, so repeat runs start fast.
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(cksum < pyproject.toml | cut -d' ' -f1)-${EXTRAS:-none}"
if [ ! -f "$stamp" ]; then
  echo "== installing the project${EXTRAS:+ with [$EXTRAS]}" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".${EXTRAS:+[$EXTRAS]}" >&2
  rm -f "$VENV"/.installed-* && touch "$stamp"
fi
