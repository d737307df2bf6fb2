#!/usr/bin/env bash
# End-to-end test of the pipeline and the Makefile on the `tiny` profile
# (a few hundred real Fashion-MNIST images, tiny models, one epoch each):
#  1. `make LIVE=1` runs every stage and the report (the live-teacher
#     student only with LIVE=1);
#  2. a second `make` has nothing to do; `make ablations` adds runs the
#     report lists; `make study-eval` evaluates the finished students;
#  3. changing one teacher's settings reruns only that teacher, the cache and
#     the students (the other teacher and the dataset are untouched);
#     (existing ablation runs included: the report shows them);
#  4. function matching: teachers trained on mixed resized-crop views, a
#     64-view mixed store, a teacher-only (alpha = 1) stem student, and the
#     teachers side by side (`make teacher-eval`);
#  5. your own data: profiles of the test's own over CIFAR-format and
#     folder-format data (generated) with an imported TorchScript teacher go
#     through make with no Fashion-MNIST; a touched raw file is checked, a
#     changed one re-imports, and one student's setting reruns that student;
#  6. broken raw data stops make with a one-line error and no manifest;
#  7. scripts/gpu-check.sh --dry-run walks every GPU step on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
profile="$work/tiny.toml"
cp data/profiles/tiny.toml "$profile"
run="$work/run"
mk() { make --no-print-directory BUILD=dev DEVICE=cpu PROFILE=tiny PROFILE_FILE="$profile" RUN="$run" "$@"; }
pass=0 fail=0
check() { if eval "$2"; then pass=$((pass+1)); echo "ok   $1"; else fail=$((fail+1)); echo "FAIL $1"; fi; }
hash() { sha256sum "$run/$1/manifest.json" | cut -d' ' -f1; }

py="${KD_TORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kd/torch-2.11.0}/bin/python"
check "make leaves the live-teacher student to LIVE=1" "mk -n students | grep -- '--variant ensemble ' >/dev/null && ! mk -n students | grep -- '--variant ensemble-live' >/dev/null && mk -n LIVE=1 students | grep -- '--variant ensemble-live' >/dev/null"
mk LIVE=1 >"$work/first.log" 2>&1 || { tail -30 "$work/first.log"; echo "FAIL make (first run)"; exit 1; }
for a in dataset teachers/cnn teachers/involution logits student/none student/cnn student/involution student/ensemble student/ensemble-live report; do
  check "make wrote $a/manifest.json" "[ -s '$run/$a/manifest.json' ]"
done
check "report has a students table" "grep -q '^## Students' '$run/report/report.md'"
check "second make has nothing to do" "mk -q LIVE=1"
# (grep without -q: an early exit would kill make -n with SIGPIPE under pipefail.)
check "SEEDS adds seed runs the report depends on" "mk -n SEEDS='7' report | grep -- '--out $run/student/ensemble-seed7 .*--seed 7' >/dev/null"
mk ABLATIONS=averaged ablations >"$work/ablation.log" 2>&1 || { tail -30 "$work/ablation.log"; echo "FAIL make ablations"; exit 1; }
# Two invocations: the report's prerequisites are the runs that exist when make starts.
{ mk student-ensemble-stems student-ensemble-correct && mk report; } >"$work/variants.log" 2>&1 || { tail -30 "$work/variants.log"; echo "FAIL make stem and weighting variants"; exit 1; }
check "make ablations trains student/ensemble-averaged" "grep -q '\"tokens\": \"averaged\"' '$run/student/ensemble-averaged/manifest.json'"
check "the report lists the ablation with its setting" "grep -q '^| ensemble-averaged | cache | soft, tau 1, alpha 0.5, one averaged token |' '$run/report/report.md'"
check "a stem run: CivT stems, one token per teacher stem" "grep -q '\"stem\": \"conv-involution\"' '$run/student/ensemble-stems/manifest.json' && grep -q '\"involution\"' '$run/student/ensemble-stems/config.json'"
check "a weighting run: the report names its weighting" "grep -q '^| ensemble-correct | cache | soft, tau 1, alpha 0.5, correct weighting |' '$run/report/report.md'"
check "the report names the stem run's stems" "grep -q '^| ensemble-stems | cache | .*CivT conv + involution stems' '$run/report/report.md'"

mk study-eval >"$work/eval.log" 2>&1 || { tail -30 "$work/eval.log"; echo "FAIL make study-eval"; exit 1; }
check "study-eval: each head of the ensemble against both teachers" "grep -q '\"head\": \"dist_involution\"' '$run/eval/ensemble.json' && grep -q '\"repeats_errors\"' '$run/eval/ensemble.json' && [ -s '$run/eval/none.json' ]"
check "study-eval evaluates finished students only, once" "[ ! -e '$run/eval/ensemble-seed1.json' ] && mk -q study-eval"
check "student eval of a teacher directory: one error line" "! target/debug/kd student eval --student '$run/teachers/cnn' >/dev/null 2>'$work/err' && [ \"\$(wc -l <'$work/err')\" = 1 ] && grep -q \"expected 'student'\" '$work/err'"

before_data=$(hash dataset) before_cnn=$(hash teachers/cnn) before_inv=$(hash teachers/involution)
before_cache=$(hash logits) before_student=$(hash student/ensemble)
sleep 1
# Change one setting of the involution teacher only.
python3 - "$profile" <<'PY'
import re, sys
p = sys.argv[1]
s = open(p).read()
s2 = re.sub(r'(\[teachers\.involution\.fit\][^\[]*?lr = )([0-9.e-]+)', lambda m: m.group(1) + '0.0031', s, count=1, flags=re.S)
assert s2 != s, "tiny profile must set [teachers.involution.fit] lr"
open(p, 'w').write(s2)
PY
mk >"$work/second.log" 2>&1 || { tail -30 "$work/second.log"; echo "FAIL make (after change)"; exit 1; }
check "dataset untouched" "[ '$before_data' = \"\$(hash dataset)\" ]"
check "cnn teacher untouched" "[ '$before_cnn' = \"\$(hash teachers/cnn)\" ]"
check "involution teacher retrained" "[ '$before_inv' != \"\$(hash teachers/involution)\" ]"
check "cache rebuilt" "[ '$before_cache' != \"\$(hash logits)\" ]"
check "ensemble student retrained" "[ '$before_student' != \"\$(hash student/ensemble)\" ]"
check "make is up to date again" "mk -q"

# Function matching on the same tiny data: every teacher on the store's
# aggressive views (mixed), many views, a student on the teachers alone.
fm="$work/fm.toml" fmrun="$work/fmrun"
python3 - "$profile" "$fm" <<'PY'
import re, sys
s = open(sys.argv[1]).read()
views = """view = { pad = 0, flip = true, resized_crop = { scale = [0.35, 1.0], ratio = [0.75, 1.3333] } }
mix = { mode = "mixup-cutmix", prob = 0.8 }
"""
for t in ("cnn", "involution"):
    s = s.replace(f"[teachers.{t}.fit]", views + f"[teachers.{t}.fit]", 1)
s = re.sub(r"\[cache\]\nviews = 2\n", '[cache]\nviews = 64\ncrop = "resized-crop"\ncrop_scale = [0.35, 1.0]\nmix = "mixup-cutmix"\nmix_prob = 0.8\n', s, count=1)
assert 'views = 64' in s, "tiny profile must start its [cache] with views = 2"
s = s.replace('stem = "conv-involution"\n', 'stem = "conv-involution"\nalpha = 1.0\n', 1)
open(sys.argv[2], "w").write(s)
PY
fmk() { make --no-print-directory BUILD=dev DEVICE=cpu PROFILE=tiny PROFILE_FILE="$fm" RUN="$fmrun" "$@"; }
fmk student-ensemble-stems "$fmrun/teachers/ensemble-test.json" >"$work/fm.log" 2>&1 || { tail -30 "$work/fm.log"; echo "FAIL make (function matching)"; exit 1; }
check "fm: teachers record their mixed views" "grep -q '\"mode\": \"mixup-cutmix\"' '$fmrun/teachers/involution/config.json' && grep -q 'resized_crop' '$fmrun/teachers/cnn/config.json'"
check "fm: a 64-view mixed store" "target/debug/kd cache inspect '$fmrun/logits' | grep -q 'x 64 views' && target/debug/kd cache inspect '$fmrun/logits' | grep -q '^mix: mixup-cutmix'"
check "fm: a teacher-only stem student" "grep -q '\"alpha\": 1.0' '$fmrun/student/ensemble-stems/manifest.json' && grep -q '\"stem\": \"conv-involution\"' '$fmrun/student/ensemble-stems/manifest.json'"
check "fm: a gallery of the views the teachers dispute" "target/debug/kd cache gallery '$fmrun/logits' --out '$work/gallery.png' --count 4 | grep -q '(4 views' && [ -s '$work/gallery.png' ]"
check "fm: the teachers side by side" "grep -q '\"averaged_accuracy\"' '$fmrun/teachers/ensemble-test.json' && grep -q '\"only_a_right\"' '$fmrun/teachers/ensemble-test.json'"

# Your own data and teacher: CIFAR-10-format batches and an image folder
# (train/ + val/, images of several non-square sizes), both generated here,
# a TorchScript teacher traced here, and profiles of this test's own. No
# Fashion-MNIST may be used: FMNIST points at a folder that must stay absent.
own="$work/own"
mkdir -p "$own"
"$py" - "$own" <<'PY' || { echo "FAIL generating the own-data inputs"; exit 1; }
import os, random, struct, sys, zlib
import torch, torch.nn as nn
own = sys.argv[1]
rng = random.Random(0)

def pixels(label, n):
    # A colour per class plus noise: learnable, not trivial.
    base = [(label * 37 + c * 90) % 256 for c in range(3)]
    return [[min(255, max(0, base[c] + rng.randint(-40, 40))) for _ in range(n)] for c in range(3)]

os.makedirs(f"{own}/cifar")
def record(label):
    return bytes([label]) + b"".join(bytes(p) for p in pixels(label, 1024))
for i in range(1, 6):
    with open(f"{own}/cifar/data_batch_{i}.bin", "wb") as f:
        f.write(b"".join(record(rng.randrange(10)) for _ in range(40)))
with open(f"{own}/cifar/test_batch.bin", "wb") as f:
    f.write(b"".join(record(k % 10) for k in range(60)))

def png(path, w, h, label):
    planes = pixels(label, w * h)
    rows = b"".join(b"\0" + bytes(planes[c][y * w + x] for x in range(w) for c in range(3)) for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
for split, n in (("train", 24), ("val", 8)):
    for k, cls in enumerate(("ant", "bee", "cat")):
        os.makedirs(f"{own}/folder/{split}/{cls}")
        for i in range(n):
            w, h = rng.choice(((24, 18), (18, 30), (20, 20)))
            png(f"{own}/folder/{split}/{cls}/{i}.png", w, h, k)

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4, 10)
    def forward(self, x):
        y = nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(y.flatten(1))
torch.manual_seed(0)
torch.jit.trace(Net().eval(), torch.zeros(2, 3, 32, 32)).save(f"{own}/traced.pt")
PY
cat >"$own/cifar.toml" <<EOF
[data]
format = "cifar"
src = "$own/cifar"

[teachers.cnn]
arch = "cnn"
preset = "cnn-tiny"
eval_batch_size = 100
[teachers.cnn.fit]
epochs = 1
batch_size = 64
lr = 0.002

[teachers.traced]
torchscript = "$own/traced.pt"
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]

[cache]
views = 2
shard_samples = 128
chunk_samples = 32
batch_size = 128

[students.none]
preset = "vit-test"
epochs = 1
batch_size = 64

[students.traced]
preset = "vit-test"
epochs = 1
batch_size = 64

[students.ensemble]
preset = "vit-test"
epochs = 1
batch_size = 64

[students.both-live]
teachers = ["cnn", "traced"]
live = true
preset = "vit-test"
epochs = 1
batch_size = 64
EOF
cat >"$own/folder.toml" <<EOF
[data]
format = "folder"
src = "$own/folder"
size = 16
channels = 3

[teachers.cnn]
arch = "cnn"
preset = "cnn-tiny"
eval_batch_size = 100
[teachers.cnn.fit]
epochs = 1
batch_size = 32
lr = 0.002

[cache]
views = 2
shard_samples = 32
chunk_samples = 16
batch_size = 32

[students.none]
preset = "vit-test"
epochs = 1
batch_size = 32

[students.cnn]
preset = "vit-test"
epochs = 1
batch_size = 32
EOF
nofm="$work/no-fashion-mnist"
omk() { local p=$1; shift; make --no-print-directory BUILD=dev DEVICE=cpu PROFILE_FILE="$own/$p.toml" RUN="$own/run-$p" FMNIST="$nofm" "$@"; }
ohash() { sha256sum "$own/run-$1/$2/manifest.json" | cut -d' ' -f1; }
for p in cifar folder; do
  omk "$p" >"$work/own-$p.log" 2>&1 || { tail -30 "$work/own-$p.log"; echo "FAIL make (own $p data)"; exit 1; }
done
for a in dataset teachers/cnn teachers/traced logits student/none student/traced student/ensemble report; do
  check "own CIFAR data: make wrote $a" "[ -s '$own/run-cifar/$a/manifest.json' ]"
done
check "own CIFAR data: the live student is left to LIVE=1" "[ ! -e '$own/run-cifar/student/both-live' ]"
check "own CIFAR data: the store holds the trained and the imported teacher" "target/debug/kd cache inspect '$own/run-cifar/logits' | grep -q traced && target/debug/kd cache inspect '$own/run-cifar/logits' | grep -q cnn"
check "own CIFAR data: the traced student learns from the imported teacher only" "grep -q '\"kd_traced\"' '$own/run-cifar/student/traced/manifest.json' && ! grep -q '\"kd_cnn\"' '$own/run-cifar/student/traced/manifest.json'"
for a in dataset teachers/cnn logits student/none student/cnn report; do
  check "own folder data: make wrote $a" "[ -s '$own/run-folder/$a/manifest.json' ]"
done
check "own folder data: val/ became the test split, 16 px" "grep -q '\"test\": 24' '$own/run-folder/dataset/manifest.json' && grep -q '\"size\": 16' '$own/run-folder/dataset/manifest.json'"
check "own data: Fashion-MNIST never fetched" "[ ! -e '$nofm' ] && ! grep -q fetch-fashion-mnist '$work/own-cifar.log' '$work/own-folder.log'"
check "own data: a second make has nothing to do" "omk cifar -q && omk folder -q"

# A touched raw file is checked again (kd hashes it) and, unchanged,
# leaves every artifact as it was; a changed one re-imports.
before_data=$(ohash cifar dataset) before_cnn=$(ohash cifar teachers/cnn)
sleep 1
touch "$own/cifar/data_batch_3.bin"
omk cifar >"$work/own-touch.log" 2>&1 || { tail -30 "$work/own-touch.log"; echo "FAIL make (touched raw file)"; exit 1; }
check "touched raw file: the import checks it" "grep -q 'data import' '$work/own-touch.log'"
check "touched raw file: dataset and teachers as they were" "[ '$before_data' = \"\$(ohash cifar dataset)\" ] && [ '$before_cnn' = \"\$(ohash cifar teachers/cnn)\" ] && omk cifar -q"
"$py" - "$own/cifar/test_batch.bin" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[1] ^= 0xFF  # one pixel of the first test image
open(p, "wb").write(b)
PY
omk cifar data >"$work/own-change.log" 2>&1 || { tail -30 "$work/own-change.log"; echo "FAIL make data (changed raw file)"; exit 1; }
check "changed raw file: re-imported" "[ '$before_data' != \"\$(ohash cifar dataset)\" ]"
omk cifar >"$work/own-rerun.log" 2>&1 || { tail -30 "$work/own-rerun.log"; echo "FAIL make (after the re-import)"; exit 1; }

# One student's setting: only that student (and the report) reruns.
declare -A before
for a in dataset teachers/cnn teachers/traced logits student/none student/traced student/ensemble; do before[$a]=$(ohash cifar "$a"); done
sleep 1
sed -i '/^\[students.traced\]/,/^\[/ s/^epochs = 1$/epochs = 2/' "$own/cifar.toml"
omk cifar >"$work/own-student.log" 2>&1 || { tail -30 "$work/own-student.log"; echo "FAIL make (one student's setting)"; exit 1; }
check "one student's setting: that student retrained" "[ '${before[student/traced]}' != \"\$(ohash cifar student/traced)\" ]"
unchanged=1
for a in dataset teachers/cnn teachers/traced logits student/none student/ensemble; do
  [ "${before[$a]}" = "$(ohash cifar "$a")" ] || unchanged=0
done
check "one student's setting: every other artifact untouched, no raw data read" "[ $unchanged = 1 ] && ! grep -qE 'data import|teacher (train|import)|cache build|--variant (none|ensemble) ' '$work/own-student.log'"

# Broken raw data: make stops, one error line names the file, no manifest.
bad="$work/badraw"
mkdir -p "$bad"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  cp -L "data/raw/fashion-mnist/$f.gz" "$bad/$f.gz"
done
head -c 1000 "data/raw/fashion-mnist/train-labels-idx1-ubyte.gz" > "$bad/train-labels-idx1-ubyte.gz"
if make --no-print-directory BUILD=dev DEVICE=cpu PROFILE_FILE="$profile" RUN="$work/badrun" RAW="$bad" data >"$work/bad.log" 2>&1; then
  check "broken raw data stops make" "false"
else
  check "broken raw data: one error line naming the file" "[ \"\$(grep -c '^error:' '$work/bad.log')\" = 1 ] && grep -q 'train-labels-idx1-ubyte.gz' '$work/bad.log'"
  check "broken raw data: no manifest" "[ ! -e '$work/badrun/dataset/manifest.json' ]"
fi

# The README's Python snippet reads the store with zarr-python.
sed -n '/^```python$/,/^```$/p' README.md | sed '1d;$d' > "$work/readme_store.py"
check "README's Python snippet reads the store" "'$py' '$work/readme_store.py' '$run/logits' > '$work/readme_store.out' 2>&1 && grep -q '^cnn (16, ' '$work/readme_store.out' && grep -q '^involution (16, ' '$work/readme_store.out'"

# The GPU check walked on the CPU (tiny profile): every step it would run
# on a GPU, and its table.
if KD=target/debug/kd scripts/gpu-check.sh --dry-run "$work/gpu-check" >"$work/gpu-check.log" 2>&1; then
  check "gpu-check --dry-run: a table with every step" "[ \"\$(grep -cE '^\\| (teacher-cnn|cache-verify|student-ensemble-live|student-ensemble-bf16|student-ensemble-dp2|student-ensemble-cpu) \\|' '$work/gpu-check/gpu-check.md')\" = 6 ]"
else
  tail -20 "$work/gpu-check.log"
  check "gpu-check --dry-run runs" "false"
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
