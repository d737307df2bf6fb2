#!/usr/bin/env bash
# End-to-end test of the pipeline and the Makefile on the `tiny` profile
# (a few hundred real Fashion-MNIST images, tiny models, one epoch each):
#  1. `make` runs every stage and the report;
#  2. a second `make` has nothing to do; `make ablations` adds runs the
#     report lists; `make study-eval` evaluates the finished students;
#  3. changing one teacher's settings reruns only that teacher, the cache and
#     the students (the other teacher and the dataset are untouched);
#     (existing ablation runs included: the report shows them);
#  4. function matching: teachers trained on mixed resized-crop views, a
#     64-view mixed store, a teacher-only (alpha = 1) stem student, and the
#     teachers side by side (`make teacher-eval`);
#  5. broken raw data stops make with a one-line error and no manifest;
#  6. scripts/gpu-check.sh --dry-run walks every GPU step on the CPU.
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

mk >"$work/first.log" 2>&1 || { tail -30 "$work/first.log"; echo "FAIL make (first run)"; exit 1; }
for a in dataset teachers/cnn teachers/involution logits student/none student/cnn student/involution student/ensemble student/ensemble-live report; do
  check "make wrote $a/manifest.json" "[ -s '$run/$a/manifest.json' ]"
done
check "report has a students table" "grep -q '^## Students' '$run/report/report.md'"
check "second make has nothing to do" "mk -q"
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
py="${KD_TORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kd/torch-2.11.0}/bin/python"
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
