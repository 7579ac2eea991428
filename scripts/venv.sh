# Sourced by scripts/demo and scripts/test: make sure $venv has localsync with the
# extras named in $extras installed, reinstalling when pyproject.toml changes.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${LOCALSYNC_VENV:-$repo/.venv}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
stamp="$venv/.localsync-installed-$extras"
if [ ! -f "$stamp" ] || [ "$repo/pyproject.toml" -nt "$stamp" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e "$repo[$extras]"
    touch "$stamp"
fi
