#!/usr/bin/env bash
# Make (once) a virtualenv holding PyTorch 2.11.0, whose libtorch tch 0.24 builds against.
# It lives in a per-user cache keyed by the torch version, so every clone on a
# machine reuses it; a new machine gets it from PyPI. Prints the venv path.
#
# Also puts Gloo's headers into $VENV/kd-gloo (kd-dist compiles its c10d shim
# against torch's ProcessGroupGloo.hpp, which includes <gloo/...>; the wheel
# ships Gloo's code inside libtorch_cpu but not its headers). They come from
# Debian's libgloo-dev .deb, unpacked without root: the shim only names Gloo
# types through pointers, so an older Gloo's headers serve (checked against
# torch 2.11 and Debian 12's 0.0~git20220518).
#
# With a CUDA build of torch it also installs the two small header wheels
# (CUDA's C runtime headers and CCCL, ~3 MB) that torch's
# ProcessGroupNCCL.hpp includes and the runtime wheel lacks, at the CUDA
# version torch runs on, so that kd-dist compiles NCCL in. Without them (no
# CUDA torch, or pip cannot reach them) kd builds with Gloo alone.
set -euo pipefail
TORCH_VERSION="${TORCH_VERSION:-2.11.0}"
VENV="${KD_TORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kd/torch-$TORCH_VERSION}"
stamp="$VENV/.kd-ready"
gloo="$VENV/kd-gloo"

fetch_gloo() {
  [ -f "$gloo/.kd-ready" ] && return 0
  echo "setup-libtorch: Gloo headers from Debian's libgloo-dev into $gloo (one time, 50 kB)" >&2
  local tmp
  tmp=$(mktemp -d)
  # A fresh machine may have empty package lists: refresh them once (as
  # root) and try again.
  (cd "$tmp" && apt-get download libgloo-dev >&2) ||
    { [ "$(id -u)" = 0 ] && apt-get update -qq >&2 && (cd "$tmp" && apt-get download libgloo-dev >&2); } || {
    echo "setup-libtorch: apt-get download libgloo-dev failed; on a system without apt put Gloo's headers (gloo/context.h, ...) in a directory and set KD_GLOO_INCLUDE to it" >&2
    rm -rf "$tmp"
    exit 1
  }
  rm -rf "$gloo"
  mkdir -p "$gloo"
  dpkg-deb -x "$tmp"/libgloo-dev_*.deb "$tmp/x"
  mv "$tmp/x/usr/include" "$gloo/include"
  rm -rf "$tmp"
  [ -f "$gloo/include/gloo/rendezvous/store.h" ] || { echo "setup-libtorch: $gloo/include lacks gloo/rendezvous/store.h" >&2; exit 1; }
  touch "$gloo/.kd-ready"
}

fetch_cuda_headers() {
  [ -f "$VENV/.kd-cuda-headers" ] && return 0
  # The CUDA runtime wheel torch depends on names the version to match.
  local rt
  rt=$("$VENV/bin/pip" list --disable-pip-version-check 2>/dev/null |
    awk '$1 ~ /^nvidia-cuda-runtime(-cu1[0-9])?$/ && !n++ {print $1, $2}') || true
  [ -n "$rt" ] || return 0
  local name=${rt% *} version=${rt#* }
  local mm
  mm=$(echo "$version" | cut -d. -f1,2)
  local pkgs
  case "$name" in
    nvidia-cuda-runtime) pkgs="nvidia-cuda-crt==$mm.* nvidia-cuda-cccl==$mm.*" ;;
    *) local sfx=${name##*-}; pkgs="nvidia-cuda-nvcc-$sfx==$mm.* nvidia-cuda-cccl-$sfx==$mm.*" ;;
  esac
  echo "setup-libtorch: CUDA $mm headers for NCCL ($pkgs)" >&2
  # shellcheck disable=SC2086
  if "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps $pkgs >&2; then
    touch "$VENV/.kd-cuda-headers"
  else
    echo "setup-libtorch: could not install $pkgs; kd will build without NCCL (Gloo only)" >&2
  fi
}

if [ -f "$stamp" ] && [ -x "$VENV/bin/python" ]; then
  fetch_gloo
  fetch_cuda_headers
  echo "$VENV"
  exit 0
fi
echo "setup-libtorch: installing torch==$TORCH_VERSION into $VENV (one time, ~5 GB)" >&2
mkdir -p "$(dirname "$VENV")"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==$TORCH_VERSION" numpy "zarr>=3,<4" safetensors >&2
"$VENV/bin/python" -c "import torch, zarr, safetensors; assert torch.__version__.startswith('$TORCH_VERSION'), torch.__version__" >&2
touch "$stamp"
fetch_gloo
fetch_cuda_headers
echo "$VENV"
