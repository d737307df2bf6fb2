#!/usr/bin/env bash
# Make (once) a virtualenv holding PyTorch 2.11.0, whose libtorch tch 0.24 builds against.
# It lives in a per-user cache keyed by the torch version, so every clone on a
# machine reuses it; a new machine gets it from PyPI. Prints the venv path.
set -euo pipefail
TORCH_VERSION="${TORCH_VERSION:-2.11.0}"
VENV="${KD_TORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kd/torch-$TORCH_VERSION}"
stamp="$VENV/.kd-ready"
if [ -f "$stamp" ] && [ -x "$VENV/bin/python" ]; then
  echo "$VENV"
  exit 0
fi
echo "setup-libtorch: installing torch==$TORCH_VERSION into $VENV (one time, ~5 GB)" >&2
mkdir -p "$(dirname "$VENV")"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==$TORCH_VERSION" numpy "zarr>=3,<4" safetensors >&2
"$VENV/bin/python" -c "import torch, zarr, safetensors; assert torch.__version__.startswith('$TORCH_VERSION'), torch.__version__" >&2
touch "$stamp"
echo "$VENV"
