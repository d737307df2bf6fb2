# kd: distil inductive bias from an ensemble of light teachers into a ViT.
#
# Every target below is the manifest file a stage writes; a stage whose
# inputs and config are unchanged does nothing, so `make` twice is free.
#   make                       demo pipeline on real Fashion-MNIST (PROFILE=demo)
#   make PROFILE=mine          the pipeline of data/profiles/mine.toml: its data,
#                              its teachers (trained or TorchScript), its students
#   make full                  the full experiment (PROFILE=full SEEDS="1 2")
#   make teachers | cache | students | student-ensemble | report   one stage
#   make test | bench | help
#
# The pipeline comes from the profile (`kd profile vars` writes what make
# needs into RUN/profile/: vars.mk, and one file per section, rewritten only
# when the section changes, so a stage reruns only when its own section, its
# inputs or kd change). Settings: PROFILE or PROFILE_FILE (the profile), RUN
# (where artifacts go), RAW (raw data; default: the profile's [data] src,
# else Fashion-MNIST, fetched), DEVICE, LIVE=1 (also train the live-teacher
# students, a slow timing baseline), LAUNCH (a launcher in front of the
# training stages: torchrun, srun), SEEDS (extra seeds), BUILD.
.DELETE_ON_ERROR:
.SUFFIXES:
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

PROFILE ?= demo
PROFILE_FILE ?= data/profiles/$(PROFILE).toml
RUN ?= data/runs/$(PROFILE)
FMNIST := data/raw/fashion-mnist
# Deferred: DATA_SRC comes from the profile's vars below.
RAW ?= $(or $(DATA_SRC),$(FMNIST))
LIVE ?=
# Put in front of the stages that train data-parallel (teachers, students),
# e.g. LAUNCH="torchrun --standalone --nproc-per-node 8 --no-python" or
# LAUNCH="srun" inside an allocation.
LAUNCH ?=
DEVICE ?= auto
BUILD ?= release

TORCH_VERSION := 2.11.0
VENV ?= $(or $(KD_TORCH_VENV),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/kd/torch-$(TORCH_VERSION))
export VIRTUAL_ENV := $(VENV)
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(VENV)/bin:$(PATH)
export KD_PYTHON := $(VENV)/bin/python
KD := target/$(if $(filter dev,$(BUILD)),debug,$(BUILD))/kd
CARGO_FLAGS := $(if $(filter dev,$(BUILD)),,--profile $(BUILD))
SOURCES := $(shell find crates scripts -name '*.rs' -o -name Cargo.toml -o -name '*.cpp' -o -name '*.h') Cargo.toml $(wildcard Cargo.lock)

.PHONY: all full help setup build data teachers cache students ablations long report plan test-slurm study study-size study-eval study-fm study-fm-size study-fm-patience study-fm-views study-fm-docs teacher-eval test bench clean distclean FORCE

all: report ## the profile's whole pipeline (the demo by default): data, teachers, cache, students, report

full: ## the full experiment (PROFILE=full: all of Fashion-MNIST, 3 seeds; hours on CPU)
	$(MAKE) PROFILE=full SEEDS="1 2" all

help: ## list targets
	@grep -hE '^[a-zA-Z_%-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 24

# Order-only below: a fresh clone's newer script must not rebuild everything.
# The second stamp is Gloo's headers for kd-dist's c10d shim (added after the
# first: a machine set up before data-parallel training gets them too).
TORCH_READY := $(VENV)/.kd-ready $(VENV)/kd-gloo/.kd-ready
$(TORCH_READY) &:
	scripts/setup-libtorch.sh >/dev/null

setup: $(FMNIST)/train-images-idx3-ubyte.gz | $(TORCH_READY) ## libtorch virtualenv + Fashion-MNIST

$(KD): $(SOURCES) | $(TORCH_READY)
	cargo build $(CARGO_FLAGS) -p kd-cli
	@touch $@

build: $(KD) ## build the kd binary

$(FMNIST)/train-images-idx3-ubyte.gz:
	scripts/fetch-fashion-mnist.sh $(FMNIST)

# What the profile names, as make variables (see the header). Goals that need
# no profile do not build kd for it.
PROFILE_DIR := $(RUN)/profile
NO_PROFILE_GOALS := help setup build plan test bench test-slurm clean distclean
ifneq ($(filter-out $(NO_PROFILE_GOALS),$(or $(MAKECMDGOALS),all)),)
include $(PROFILE_DIR)/vars.mk
endif
$(PROFILE_DIR)/vars.mk: $(PROFILE_FILE) $(KD)
	$(KD) profile vars --profile $(PROFILE_FILE) --out $(PROFILE_DIR)
	@touch $@
# A section file is written with vars.mk (above); one still missing after
# writing them again names a section the profile lacks.
$(PROFILE_DIR)/%.toml: | $(KD)
	@$(KD) profile vars --profile $(PROFILE_FILE) --out $(PROFILE_DIR)
	@test -e $@ || { echo "error: $(PROFILE_FILE) has no [$(subst /,.,$*)] section" >&2; exit 1; }

# The main store's teachers (cross-fitted ones fill their own store).
TEACHERS = $(STORE_TEACHERS)
# Every student the profile names; the live-teacher ones (a 2-3x slower
# timing baseline) only with LIVE=1.
VARIANTS = $(PROFILE_STUDENTS)
SEEDED_VARIANTS = $(filter-out $(LIVE_STUDENTS),$(PROFILE_STUDENTS))

# The raw data: the import stage runs again when a file under RAW is newer
# than its last run (RAW_STAMP; make compares time stamps, so only then does
# kd hash the raw files). A touched but unchanged file leaves the dataset,
# and so every later stage, as it was. Fashion-MNIST, the demo's data, is
# fetched when missing.
RAW_STAMP := $(PROFILE_DIR)/raw-checked
RAW_CHANGED = $(if $(wildcard $(RUN)/dataset/manifest.json),$(if $(wildcard $(RAW_STAMP)),$(if $(shell find -L '$(RAW)' -newer '$(RAW_STAMP)' -print -quit 2>/dev/null),FORCE),FORCE))
FORCE:

$(RUN)/dataset/manifest.json: $(PROFILE_DIR)/data.toml $(KD) $(if $(filter $(FMNIST),$(RAW)),$(FMNIST)/train-images-idx3-ubyte.gz) $(RAW_CHANGED)
	@touch $(RAW_STAMP).new
	$(KD) data import --profile $(PROFILE_FILE) --src '$(RAW)' --out $(@D)
	@mv $(RAW_STAMP).new $(RAW_STAMP)

data: $(RUN)/dataset/manifest.json ## import the profile's raw data (RAW) into a dataset artifact

$(RUN)/teachers/%/manifest.json: $(RUN)/dataset/manifest.json $(PROFILE_DIR)/teachers/%.toml $(KD)
	$(LAUNCH) $(KD) teacher train --profile $(PROFILE_FILE) --name $* --dataset $(RUN)/dataset --out $(@D) --device $(DEVICE)

# A TorchScript teacher ([teachers.<name>] torchscript = "model.pt"): imported,
# checked on the dataset and evaluated instead of trained.
define import_rule
$(RUN)/teachers/$(1)/manifest.json: $(RUN)/dataset/manifest.json $(PROFILE_DIR)/teachers/$(1).toml $(TORCHSCRIPT_$(1)) $(KD)
	$(KD) teacher import --torchscript '$(TORCHSCRIPT_$(1))' --name $(1) --dataset $(RUN)/dataset --out $$(@D) --device $(DEVICE) $(IMPORT_FLAGS_$(1))
endef
$(foreach t,$(IMPORTED_TEACHERS),$(eval $(call import_rule,$(t))))

$(addprefix teacher-,$(PROFILE_TEACHERS)): teacher-%: $(RUN)/teachers/%/manifest.json
.PHONY: $(addprefix teacher-,$(PROFILE_TEACHERS))
teachers: $(foreach t,$(TEACHERS),$(RUN)/teachers/$(t)/manifest.json) ## train (or import) the profile's teachers

# $(1): store directory, $(2): its teachers, $(3): extra flags.
define cache_rule
$(RUN)/$(1)/manifest.json: $(foreach t,$(2),$(RUN)/teachers/$(t)/manifest.json) $(PROFILE_DIR)/cache.toml $(KD)
	$(KD) cache build --profile $(PROFILE_FILE) --dataset $(RUN)/dataset \
	  $(foreach t,$(2),--teacher $(RUN)/teachers/$(t)) --out $$(@D) --device $(DEVICE) $(3)
endef
$(eval $(call cache_rule,logits,$(TEACHERS),))
# The study's two other stores: cross-fitted teachers (each training image
# labelled by the fold model that never saw it), and mixed views.
$(eval $(call cache_rule,logits-crossfit,$(addsuffix -crossfit,$(TEACHERS)),))
$(eval $(call cache_rule,logits-mixed,$(TEACHERS),--mix mixup-cutmix))

cache: $(RUN)/logits/manifest.json ## write every teacher's logits on K views into one Zarr store

# Each student's teachers (SOURCE_<variant>) and what it waits for
# (DEPS_<variant>) come from the profile; the study's students of its other
# stores are named here.
SOURCE_ensemble-crossfit := cache:$(RUN)/logits-crossfit
SOURCE_ensemble-mixed := cache:$(RUN)/logits-mixed
SOURCE_ensemble-stems-crossfit := cache:$(RUN)/logits-crossfit
SOURCE_involution-stems-crossfit := cache:$(RUN)/logits-crossfit\#involution-crossfit
DEPS_ensemble-crossfit := $(RUN)/logits-crossfit/manifest.json
DEPS_ensemble-mixed := $(RUN)/logits-mixed/manifest.json
DEPS_ensemble-stems-crossfit := $(RUN)/logits-crossfit/manifest.json
DEPS_involution-stems-crossfit := $(RUN)/logits-crossfit/manifest.json

# $(1): variant, $(2): directory suffix, $(3): extra flags (a seed),
# $(4): another store in place of the variant's own (its directory under RUN).
define student_rule
$(RUN)/student/$(1)$(2)/manifest.json: $(if $(4),$(RUN)/$(4)/manifest.json,$(or $(DEPS_$(1)),$(RUN)/logits/manifest.json)) $(PROFILE_DIR)/students/$(1).toml $(KD)
	$(LAUNCH) $(KD) student train --profile $(PROFILE_FILE) --variant $(1) --dataset $(RUN)/dataset \
	  --teachers '$(if $(4),cache:$(RUN)/$(4),$(SOURCE_$(1)))' --out $$(@D) --device $(DEVICE) $(3)
student-$(1)$(2): $(RUN)/student/$(1)$(2)/manifest.json
endef
$(foreach v,$(VARIANTS),$(eval $(call student_rule,$(v),,)))

# Extra seeds of the profile's students go to student/<variant>-seed<N>;
# the report groups them with the profile's own seed (mean ± sd). These run
# names (<variant>, -seed<N>, -ep<N>, the compared variants SEED_VARIANTS, the
# study's order STUDY_MAIN) are the rules of kd_report::naming
# (crates/report/src/naming.rs), which the reports parse them with; its tests
# read this file.
SEEDS ?=
SEED_VARIANTS := none cnn involution ensemble
SEED_RUNS := $(foreach n,$(SEEDS),$(foreach v,$(SEEDED_VARIANTS),$(v)-seed$(n)))
$(foreach v,$(SEEDED_VARIANTS),$(foreach n,$(SEEDS),$(eval $(call student_rule,$(v),-seed$(n),--seed $(n)))))

# Ablations of the ensemble student (one seed each) into student/ensemble-<name>:
# what the distillation settings change at the profile's budget. (Stems and
# weightings are variants of their own, student-ensemble-stems,
# student-ensemble-confidence, ..., made from the profile's sections of those names.)
ABLATION_tau3 := --tau 3
ABLATION_tau0.5 := --tau 0.5
ABLATION_alpha0.8 := --alpha 0.8
ABLATION_hard := --distill hard
ABLATION_averaged := --tokens averaged
ABLATIONS ?= tau3 tau0.5 alpha0.8 hard averaged
$(foreach a,$(ABLATIONS),$(eval $(call student_rule,ensemble,-$(a),$(ABLATION_$(a)))))

# The four compared variants at a longer budget (one seed) into
# student/<variant>-ep<N>: does the ranking change once the student has
# had time to absorb the teachers?
# (Name rule: kd_report::naming, as for -seed<N>.)
LONG_EPOCHS ?= 8
LONG_RUNS := $(foreach v,$(SEED_VARIANTS),$(v)-ep$(LONG_EPOCHS))
$(foreach v,$(SEED_VARIANTS),$(eval $(call student_rule,$(v),-ep$(LONG_EPOCHS),--epochs $(LONG_EPOCHS))))

# The data-efficiency study: one profile per training-set size
# (data/profiles/study-<N>.toml, run into data/runs/study-<N>), every variant
# with seeds 0 and STUDY_SEEDS; `make study` runs the sizes in order, each
# completely (seed 0 of every variant before the other seeds), then writes
# the cross-size report into data/runs/study/report.
STUDY_SIZES ?= 1000 2000 4000 8000
STUDY_SEEDS ?= 1 2
# The stem variants without teachers and with one teacher are the controls
# of the stem ensemble: what the stems give a student by themselves. The
# variants of one store first (all seeds), then those of the two other
# stores, so a cut-short study still has complete comparisons.
STUDY_MAIN := none cnn involution ensemble none-stems cnn-stems involution-stems \
              ensemble-stems ensemble-confidence ensemble-correct
STUDY_EXTRA := ensemble-crossfit ensemble-mixed ensemble-stems-crossfit involution-stems-crossfit
STUDY_VARIANTS := $(STUDY_MAIN) $(STUDY_EXTRA)
seeded = $(1) $(foreach n,$(STUDY_SEEDS),$(addsuffix -seed$(n),$(1)))
STUDY_RUNS := $(call seeded,$(STUDY_MAIN)) $(call seeded,$(STUDY_EXTRA))
$(foreach v,$(filter-out $(VARIANTS),$(STUDY_VARIANTS)),$(eval $(call student_rule,$(v),,)))
# (Seed rules that SEEDS already made for the four compared variants are not made twice.)
$(foreach v,$(STUDY_VARIANTS),$(foreach n,$(STUDY_SEEDS),$(if $(and $(filter $(v),$(SEEDED_VARIANTS)),$(filter $(n),$(SEEDS))),,$(eval $(call student_rule,$(v),-seed$(n),--seed $(n))))))

study-size: $(addprefix student-,$(STUDY_RUNS)) ## one size of the study (PROFILE=study-<N>): teachers, three stores, every variant x 3 seeds, its report
	$(MAKE) --no-print-directory study-eval
	$(KD) report --run $(RUN) --out $(RUN)/report

# Each finished study student's heads on test against the plain teachers and
# its own (`kd student eval`), into eval/<run>.json: does a distillation
# token learn its own teacher? Study v1's runs and study v2's patience and
# views runs. Only finished students: evaluating never trains one.
STUDY_EVALS = $(patsubst $(RUN)/student/%/manifest.json,$(RUN)/eval/%.json,\
  $(filter $(foreach r,$(STUDY_RUNS) $(FM_PATIENCE_RUNS) $(FM_PATIENT_RUNS) $(FM_VIEWS_RUNS),$(RUN)/student/$(r)/manifest.json),\
    $(wildcard $(RUN)/student/*/manifest.json)))
$(RUN)/eval/%.json: $(RUN)/student/%/manifest.json $(foreach t,$(TEACHERS),$(RUN)/teachers/$(t)/manifest.json) $(KD)
	@mkdir -p $(@D)
	$(KD) student eval --student $(RUN)/student/$* $(foreach t,$(TEACHERS),--teacher $(RUN)/teachers/$(t)) \
	  --device $(DEVICE) --out $@ >/dev/null

study: ## the data-efficiency study: every STUDY_SIZES size, then data/runs/study/report (hours on CPU)
	@set -e; for n in $(STUDY_SIZES); do $(MAKE) --no-print-directory PROFILE=study-$$n study-size; done
	$(KD) study --out data/runs/study/report --previous docs/results/study/study.json $(foreach n,$(STUDY_SIZES),--run data/runs/study-$(n))

# Study v2, function matching: data/profiles/study-fm-<N>.toml into
# data/runs/study-fm-<N>. Teachers trained on the store's aggressive views,
# a store of 128 such views per image, stem students matching the teachers
# alone (alpha = 1) on a longer budget, 3 seeds each (STUDY_SEEDS), the
# no-teacher stem student as the control; the teachers' ensemble premise
# (their averaged prediction against the better one) on val and test.
# `make study-fm` runs every FM_SIZES size, then writes the cross-size page
# into docs/results/function-matching.
FM_SIZES ?= 1000 2000 4000
FM_VARIANTS := none-stems cnn-stems involution-stems ensemble-stems
FM_RUNS := $(call seeded,$(FM_VARIANTS))

$(RUN)/teachers/ensemble-%.json: $(foreach t,$(TEACHERS),$(RUN)/teachers/$(t)/manifest.json) $(KD)
	$(KD) teacher eval $(foreach t,$(TEACHERS),--teacher $(RUN)/teachers/$(t)) \
	  --dataset $(RUN)/dataset --split $* --device $(DEVICE) --json > $@.tmp && mv $@.tmp $@

teacher-eval: $(RUN)/teachers/ensemble-val.json $(RUN)/teachers/ensemble-test.json ## the teachers side by side (each, averaged, pairs) on val and test

study-fm-size: teacher-eval $(addprefix student-,$(FM_RUNS)) ## one size of study v2 (PROFILE=study-fm-<N>): teachers, store, 4 variants x 3 seeds, evaluation
	$(MAKE) --no-print-directory study-eval

# Its patience curve: the teacher-only stem students at several budgets, one
# seed, into student/<variant>-ep<N> (the -ep<N> runs are kd_report::naming's
# longer budgets: tabulated, never picked by the verdict). The largest is 10x
# study v1's 80 epochs. The no-teacher student at the largest budget is the
# control: what patience alone gives.
FM_BUDGETS ?= 40 240 480 800
FM_PATIENCE_VARIANTS := cnn-stems ensemble-stems
FM_PATIENCE_RUNS := $(foreach v,$(FM_PATIENCE_VARIANTS),$(foreach e,$(FM_BUDGETS),$(v)-ep$(e))) none-stems-ep$(lastword $(FM_BUDGETS))
$(foreach v,$(FM_PATIENCE_VARIANTS),$(foreach e,$(filter-out $(LONG_EPOCHS),$(FM_BUDGETS)),$(eval $(call student_rule,$(v),-ep$(e),--epochs $(e)))))
$(eval $(call student_rule,none-stems,-ep$(lastword $(FM_BUDGETS)),--epochs $(lastword $(FM_BUDGETS))))

# The patience curve's two variants at its largest budget with the other
# seeds (STUDY_SEEDS), into student/<variant>-ep<N>-seed<M>: whether a lead
# at the patient budget is more than seed noise.
FM_PATIENT := $(lastword $(FM_BUDGETS))
FM_PATIENT_RUNS := $(foreach v,$(FM_PATIENCE_VARIANTS),$(foreach n,$(STUDY_SEEDS),$(v)-ep$(FM_PATIENT)-seed$(n)))
$(foreach n,$(STUDY_SEEDS),$(foreach v,$(FM_PATIENCE_VARIANTS),$(eval $(call student_rule,$(v),-ep$(FM_PATIENT)-seed$(n),--epochs $(FM_PATIENT) --seed $(n)))))

study-fm-patient-seeds: $(addprefix student-,$(FM_PATIENT_RUNS)) ## study v2's patience variants at the largest FM_BUDGETS budget with STUDY_SEEDS (PROFILE=study-fm-<N>)
	$(MAKE) --no-print-directory study-eval

study-fm-patience: $(addprefix student-,$(FM_PATIENCE_RUNS)) ## study v2's patience curve at one size (PROFILE=study-fm-<N>): cnn-stems and ensemble-stems at FM_BUDGETS epochs, none-stems at the last
	$(MAKE) --no-print-directory study-eval

# Its views curve: the ensemble stem student at the profile's budget, one
# seed, over stores of FM_VIEWS views per image (the same policy; the
# profile's own store is the 128-view point), into student/ensemble-stems-k<K>
# (kd_report::naming's view counts: tabulated, never picked by the verdict).
FM_VIEWS ?= 8 32 256
FM_VIEWS_RUNS := $(foreach k,$(FM_VIEWS),ensemble-stems-k$(k))
$(foreach k,$(FM_VIEWS),$(eval $(call cache_rule,logits-k$(k),$(TEACHERS),--views $(k))))
$(foreach k,$(FM_VIEWS),$(eval $(call student_rule,ensemble-stems,-k$(k),,logits-k$(k))))

study-fm-views: $(addprefix student-,$(FM_VIEWS_RUNS)) ## study v2's views curve at one size (PROFILE=study-fm-<N>): ensemble-stems over stores of FM_VIEWS views
	$(MAKE) --no-print-directory study-eval

# (Here, below the lists of study v2's runs that its prerequisites name.)
study-eval: $(STUDY_EVALS) ## evaluate every finished student of one study size against the teachers (PROFILE=study-<N>)

study-fm: ## study v2 (function matching): every FM_SIZES size, then docs/results/function-matching (hours on CPU)
	@set -e; for n in $(FM_SIZES); do $(MAKE) --no-print-directory PROFILE=study-fm-$$n study-fm-size; done
	$(MAKE) --no-print-directory study-fm-docs

# The study's pages from whatever runs are finished: the cross-size page,
# and per size the run's report (with the patience curve when
# `study-fm-patience` has run) and the gallery of disputed stored views.
# Sizes whose runs are not on this machine keep their committed results
# (study.json is the --previous) and their committed report and gallery; a
# size part-way through (students of its own, no store yet) gets its report.
FM_DOCS := docs/results/function-matching
study-fm-docs: $(KD) ## write docs/results/function-matching from the finished study v2 runs of FM_SIZES
	$(KD) study --out $(FM_DOCS) --previous $(FM_DOCS)/study.json $(foreach n,$(FM_SIZES),--run data/runs/study-fm-$(n))
	@set -e; for n in $(FM_SIZES); do \
	  [ -d data/runs/study-fm-$$n/student ] || continue; \
	  $(KD) report --force --run data/runs/study-fm-$$n --out $(FM_DOCS)/report-$$n; \
	  [ ! -f data/runs/study-fm-$$n/logits/manifest.json ] || \
	    $(KD) cache gallery data/runs/study-fm-$$n/logits --out $(FM_DOCS)/gallery-$$n.png; \
	done

# The profile's students and their seeds first, the live timing runs last
# (with LIVE=1).
STUDENT_RUNS := $(SEEDED_VARIANTS) $(SEED_RUNS) $(if $(LIVE),$(LIVE_STUDENTS))

students: $(addprefix student-,$(STUDENT_RUNS)) ## train the profile's students (the demo: no teacher, each teacher, the ensemble); SEEDS="1 2" adds seeds, LIVE=1 the live-teacher ones

# The report lists every finished run under student/; a sub-make sees the new ones.
ablations: $(foreach a,$(ABLATIONS),student-ensemble-$(a)) ## ensemble ablations: tau 3 / 0.5, alpha 0.8, hard labels, one averaged token; updates the report
	@$(MAKE) --no-print-directory report

long: $(addprefix student-,$(LONG_RUNS)) ## none/cnn/involution/ensemble at LONG_EPOCHS epochs, one seed; updates the report
	@$(MAKE) --no-print-directory report

$(RUN)/report/manifest.json: $(foreach v,$(STUDENT_RUNS),$(RUN)/student/$(v)/manifest.json) \
    $(wildcard $(RUN)/student/*/manifest.json) $(KD)
	$(KD) report --run $(RUN) --out $(@D)

report: $(RUN)/report/manifest.json ## results table, timings, cache size, curves (report/report.md)

plan: $(KD) ## what the profile's run will take, stage by stage (images, steps, store, memory, time from a measured step), before anything long starts
	$(KD) plan --profile $(PROFILE_FILE) --device $(DEVICE)

test: $(FMNIST)/train-images-idx3-ubyte.gz | $(TORCH_READY) ## the test suite (unit, integration, Makefile and pipeline tests on tiny data)
	cargo test --workspace --no-fail-fast
	tests/pipeline.sh

bench: $(FMNIST)/train-images-idx3-ubyte.gz | $(TORCH_READY) ## benchmarks, one table: data/runs/bench.md
	scripts/bench.sh data/runs/bench.md

test-slurm: $(KD) ## opt-in: a one-node Slurm cluster runs the job files on the tiny profile (installs slurm-wlm and munge if missing; root)
	KD=$(KD) scripts/test-slurm.sh

clean: ## remove this profile's run artifacts
	rm -rf $(RUN)

distclean: clean ## also remove build outputs
	cargo clean
