#!/usr/bin/env bash
# Idempotent set-up: a virtual environment (unless one is active or PYTHON is given), torch 2.13.0
# first where torch is missing (keeps Colab's or a CUDA torch that is already there), the project
# with all its extras pinned by constraints.txt, and a Jupyter kernel that papermill runs notebooks in.
set -euo pipefail
cd "$(dirname "$0")/.."

# One line per step, before it starts, with what it installs and about how long it takes.
step() { echo "setup: $*"; }
start=$SECONDS

VENV="${VENV:-.venv}"
if [[ -n "${PYTHON:-}" ]]; then
    py="$PYTHON"
elif [[ -n "${VIRTUAL_ENV:-}" ]]; then
    py="$VIRTUAL_ENV/bin/python"
else
    if [[ ! -x "$VENV/bin/python" ]]; then
        step "creating the virtual environment $VENV (a few seconds)"
        python3 -m venv "$VENV"
    fi
    py="$VENV/bin/python"
fi

stamp="$("$py" -c 'import sys; print(sys.prefix)')/.rl-circuitry-installed"
want="$(cat pyproject.toml $([[ -f constraints.txt ]] && echo constraints.txt) | sha256sum | cut -c1-16)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && "$py" -c 'import helpers, torch' 2>/dev/null; then
    echo "setup: environment up to date ($py)"
    exit 0
fi

pip=("$py" -m pip install --disable-pip-version-check -q)
if ! "$py" -c 'import torch' 2>/dev/null; then
    step "installing torch 2.13.0 into $py (a large download with its CUDA libraries on Linux: 1-3 minutes)"
    "${pip[@]}" torch==2.13.0
fi
constraints=()
if [[ -f constraints.txt && -z "${NO_CONSTRAINTS:-}" ]]; then constraints=(-c constraints.txt); fi
step "installing the project and its extras (transformers, nnsight, trl, papermill, jupyter-book, ...)" \
    "${constraints:+pinned by constraints.txt }(about 2 minutes the first time)"
"${pip[@]}" -e ".[all]" "${constraints[@]}"
step "registering the Jupyter kernel rl-circuitry that papermill runs notebooks in"
"$py" -m ipykernel install --sys-prefix --name rl-circuitry --display-name "Python (rl-circuitry)" >/dev/null
echo "$want" > "$stamp"
echo "setup: done in $((SECONDS - start)) s ($py)"
