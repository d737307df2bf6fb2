#!/usr/bin/env bash
# Two kd binaries, one small pipeline, every artifact compared byte for
# byte: the check that a refactor or a new code path changed no result.
# A 1500-image Fashion-MNIST slice with a val carve, a CNN teacher trained
# on mixed views, an involution teacher, an 8-view mixup/cutmix store and
# a stem student; then every chunk of the dataset and the store (zarr.json
# aside: it pins input manifests, which name the tool's revision) and each
# weights file. About a minute on 2 cores.
#
#   scripts/same-artifacts.sh OLD_KD NEW_KD WORKDIR   (after `make`, which fetches Fashion-MNIST)
set -euo pipefail
A=${1:?usage: scripts/same-artifacts.sh OLD_KD NEW_KD WORKDIR}; B=${2:?new kd}; W=${3:?work dir}
RAW=${RAW:-data/raw/fashion-mnist}
fail() { echo "same-artifacts: a stage failed; the end of $1/log:" >&2; tail -3 "$1/log" >&2; exit 2; }
run() {
  local kd=$1 o=$2
  mkdir -p $o
  $kd data import --format idx --src $RAW --out $o/ds --limit-train 1500 --limit-test 500 --val-fraction 0.1 --seed 1 >>"$o/log" 2>&1 || fail "$o"
  $kd teacher train --arch cnn --preset cnn-tiny --dataset $o/ds --out $o/cnn --epochs 2 --device cpu --mix mixup >>"$o/log" 2>&1 || fail "$o"
  $kd teacher train --arch involution --preset rednet-tiny --dataset $o/ds --out $o/inv --epochs 1 --device cpu >>"$o/log" 2>&1 || fail "$o"
  $kd cache build --dataset $o/ds --teacher $o/cnn --teacher $o/inv --out $o/logits --views 8 --mix mixup-cutmix --device cpu >>"$o/log" 2>&1 || fail "$o"
  $kd student train --dataset $o/ds --teachers cache:$o/logits --preset vit-tiny --stem conv-involution --epochs 2 --out $o/student --device cpu >>"$o/log" 2>&1 || fail "$o"
}
run $A $W/a
run $B $W/b
same=1
for z in ds/dataset.zarr logits/logits.zarr; do
  if diff -rq --exclude=zarr.json $W/a/$z $W/b/$z >/dev/null; then echo "$z: every chunk identical ($(find $W/a/$z -type f ! -name zarr.json | wc -l) files)"; else echo "$z: DIFFERS"; same=0; fi
done
for f in cnn/weights.safetensors inv/weights.safetensors student/weights.safetensors; do
  if cmp -s $W/a/$f $W/b/$f; then echo "$f: identical ($(stat -c %s $W/a/$f) bytes)"; else echo "$f: DIFFERS"; same=0; fi
done
python3 -c "
import json
a, b = (json.load(open(f'$W/{s}/student/metrics.json'))['test_accuracy'] for s in 'ab')
print(f'student test accuracy {a:.4f} vs {b:.4f}')"
if [ $same = 1 ]; then echo "all identical"; else echo "DIFFERENCES"; exit 1; fi
