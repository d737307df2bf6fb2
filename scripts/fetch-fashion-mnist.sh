#!/usr/bin/env bash
# Put Fashion-MNIST (IDX, gzipped) under $1 (default data/raw/fashion-mnist).
# Source: Debian's dataset-fashion-mnist package (MIT licence). As root it is
# installed with apt-get; otherwise the .deb is downloaded and unpacked locally.
set -euo pipefail
dest="${1:-data/raw/fashion-mnist}"
sys=/usr/share/datasets/fashion-mnist
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

have() { for f in "${files[@]}"; do [ -s "$1/$f" ] || return 1; done; }

if have "$dest"; then exit 0; fi
if ! have "$sys"; then
  if [ "$(id -u)" = 0 ]; then
    echo "fetch-fashion-mnist: apt-get install dataset-fashion-mnist" >&2
    apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >&2
  else
    echo "fetch-fashion-mnist: apt-get download + dpkg-deb -x (not root)" >&2
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download dataset-fashion-mnist >&2)
    mkdir -p data/raw/.deb
    dpkg-deb -x "$tmp"/dataset-fashion-mnist_*.deb data/raw/.deb
    rm -rf "$tmp"
    sys="$PWD/data/raw/.deb/usr/share/datasets/fashion-mnist"
  fi
fi
have "$sys" || { echo "fetch-fashion-mnist: $sys lacks the IDX files" >&2; exit 1; }
mkdir -p "$dest"
for f in "${files[@]}"; do ln -sf "$sys/$f" "$dest/$f"; done
echo "fetch-fashion-mnist: $dest ready" >&2
