#!/usr/bin/env bash
# Train the tiny generator on one GPU, stage after stage, each under a wall-clock budget.
#
#   scripts/train_tiny_gpu.sh [vae] [teacher] [student] [noasd]     (default: all four)
#
# Settings (environment):
#   PREPARED=data/prepared_128   prepared clips (python -m hub.data prepare ... --size 128)
#   RUNS=runs                    run folders: RUNS/{vae,teacher,student,student-noasd}-tiny-gpu
#   VAE_MIN=7 TEACHER_MIN=7 STUDENT_MIN=5   minutes per stage (train.time_limit_min: the LR
#                                schedule is refitted to the time after 20 steps)
#   PORTRAITS=                   a .npy of portrait crops for the VAE (machines without the shared
#                                data); default: the shared portraits, face-cropped
#   DECODER=pyav                 decoder for the decoded-clip cache (opencv where PyAV is missing)
#   PYTHON=python                the interpreter (needs requirements-train.txt's packages)
#   EXTRA_STUDENT=               extra overrides for both student runs
#   DEVICE=                      train.device for every stage (default: the presets' cuda)
#   EXTRA=                       extra overrides for every stage (e.g. "train.steps=3" for a smoke run)
#
# Each stage exports RUNS/<run>/export (config.json + model.safetensors); the next stage reads it.
# The student and the no-ASD ablation train at the same time on the one GPU (both are small).
# Stages already exported are skipped, so the script can be rerun after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."

PREPARED=${PREPARED:-data/prepared_128}
RUNS=${RUNS:-runs}
VAE_MIN=${VAE_MIN:-7}
TEACHER_MIN=${TEACHER_MIN:-7}
STUDENT_MIN=${STUDENT_MIN:-5}
DECODER=${DECODER:-pyav}
PYTHON=${PYTHON:-python}
EXTRA_STUDENT=${EXTRA_STUDENT:-}
[ -n "${DEVICE:-}" ] && EXTRA_STUDENT="train.device=$DEVICE $EXTRA_STUDENT"
dev=()
[ -n "${DEVICE:-}" ] && dev=("train.device=$DEVICE")
# shellcheck disable=SC2206
[ -n "${EXTRA:-}" ] && dev+=($EXTRA) && EXTRA_STUDENT="$EXTRA $EXTRA_STUDENT"
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(vae teacher student noasd)
want() { local s; for s in "${stages[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
log() { echo "[$(date +%H:%M:%S)] $*"; }

if [ ! -f "$PREPARED/index.csv" ]; then
  echo "error: $PREPARED/index.csv not found; prepare the clips first:" >&2
  echo "  python -m hub.data prepare --src \$REST_DATA_DIR/manifest.csv --out $PREPARED --size 128" >&2
  exit 2
fi
mkdir -p "$RUNS"
VAE_EXPORT=$RUNS/vae-tiny-gpu/export
TEACHER_EXPORT=$RUNS/teacher-tiny-gpu/export

log "decoded-clip cache ($DECODER)"
"$PYTHON" -m hub.data decode --root "$PREPARED" --splits train,motion,val --decoder "$DECODER"

if want vae && [ ! -f "$VAE_EXPORT/config.json" ]; then
  log "vae: $VAE_MIN min"
  portraits=()
  [ -n "${PORTRAITS:-}" ] && portraits=("data.portraits_file=$PORTRAITS")
  "$PYTHON" -m hub.train vae --preset tiny-gpu data.prepared_dir="$PREPARED" ${portraits[@]+"${portraits[@]}"} \
    ${dev[@]+"${dev[@]}"} train.out_dir="$RUNS" train.run_name=vae-tiny-gpu train.time_limit_min="$VAE_MIN" --resume auto
fi

if want teacher && [ ! -f "$TEACHER_EXPORT/config.json" ]; then
  log "teacher: $TEACHER_MIN min (latent corpus first)"
  "$PYTHON" -m hub.train teacher --preset tiny-gpu data.prepared_dir="$PREPARED" \
    model.vae_checkpoint="$VAE_EXPORT" ${dev[@]+"${dev[@]}"} train.out_dir="$RUNS" train.run_name=teacher-tiny-gpu \
    train.time_limit_min="$TEACHER_MIN" --resume auto
fi

pids=()
if want student && [ ! -f "$RUNS/student-tiny-gpu/export/config.json" ]; then
  log "student (ASD): $STUDENT_MIN min"
  # shellcheck disable=SC2086
  "$PYTHON" -m hub.train student --preset tiny-gpu data.prepared_dir="$PREPARED" \
    model.teacher_checkpoint="$TEACHER_EXPORT" train.out_dir="$RUNS" train.run_name=student-tiny-gpu \
    train.time_limit_min="$STUDENT_MIN" $EXTRA_STUDENT --resume auto > "$RUNS/student-tiny-gpu.log" 2>&1 &
  pids+=($!)
fi
if want noasd && [ ! -f "$RUNS/student-noasd-tiny-gpu/export/config.json" ]; then
  log "student (no ASD): $STUDENT_MIN min"
  # shellcheck disable=SC2086
  "$PYTHON" -m hub.train student --preset tiny-gpu-noasd data.prepared_dir="$PREPARED" \
    model.teacher_checkpoint="$TEACHER_EXPORT" train.out_dir="$RUNS" train.run_name=student-noasd-tiny-gpu \
    train.time_limit_min="$STUDENT_MIN" $EXTRA_STUDENT --resume auto > "$RUNS/student-noasd-tiny-gpu.log" 2>&1 &
  pids+=($!)
fi
status=0
for pid in ${pids[@]+"${pids[@]}"}; do wait "$pid" || status=1; done
log "done (status $status)"
exit $status
