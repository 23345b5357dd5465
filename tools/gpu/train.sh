#!/usr/bin/env bash
# Train the default recipe on a lent GPU machine (PyTorch and/or JAX, no TensorFlow), from the
# repository root, within a fixed time. See docs/training.md.
#
#   here:  python tools/gpu/pack_data.py pack ../shared/data/rsna-100 .gpu/rsna-100.npz
#          (and the wheels the box lacks in .whl/; move exported/ aside so the tree is < 64 MiB)
#   there: TRAIN_SECONDS=420 OUT=$OUT bash tools/gpu/train.sh
#   here:  python tools/gpu/collect.py join FILES_DIR ../runs/gpu-YYYYMMDD
#
# Every run in tools/gpu/runs.txt (or RUNS=file) starts at once; each fits its whole cosine
# schedule into TRAIN_SECONDS (--fit-epochs-to-time) and is stopped cleanly (SIGINT) if it
# overruns. The best models come back in parts of at most 15 MiB (tools/gpu/collect.py).
set -uo pipefail
TRAIN_SECONDS=${TRAIN_SECONDS:-420}
OUT=${OUT:-/tmp/boneage-gpu-out}
WORK=${WORK:-/tmp/boneage-gpu}
RUNS=${RUNS:-tools/gpu/runs.txt}
MODELS=${MODELS:-2}
ARCHIVE=${ARCHIVE:-.gpu/rsna-100.npz}
PYTHON=${PYTHON:-python3}
COMMON="--backbone densenet121 --input-size 100 --batch-size 64 --epochs 200 --set patience=1000 --set workers=6"
stamp() { echo "[$(date +%T)] $*"; }
fail() { echo "train.sh: error: $*" >&2; exit 2; }  # before anything is made or started

[[ $TRAIN_SECONDS =~ ^[1-9][0-9]*$ ]] || fail "TRAIN_SECONDS wants a whole number of seconds, at least 1, not '$TRAIN_SECONDS'"
[[ $MODELS =~ ^[0-9]+$ ]] || fail "MODELS wants a whole number of models to bring back, not '$MODELS'"
[ -f "$RUNS" ] || fail "no such runs file: $RUNS (RUNS=FILE names another)"
[ -f "$ARCHIVE" ] || fail "no such archive: $ARCHIVE (tools/gpu/pack_data.py pack makes it; ARCHIVE=FILE names another)"
mkdir -p "$OUT" "$WORK/runs"
export PYTHONPATH="$PWD/src"
if ! KERAS_BACKEND=torch "$PYTHON" -c "import keras, pydantic" 2>/dev/null; then
  stamp "installing the carried wheels"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl || exit 1
  export PYTHONPATH="$PWD/src:$WORK/site"
fi
stamp "unpacking $ARCHIVE"
"$PYTHON" tools/gpu/pack_data.py unpack "$ARCHIVE" "$WORK/data/rsna-100" || exit 1
DATA="$WORK/data/rsna-100/labels.csv:$WORK/data/rsna-100"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader -l 60 > "$WORK/runs/gpu-usage.txt" 2>&1 &

pids=()
while read -r name backend flags; do
  case "$name" in ''|'#'*) continue ;; esac
  stamp "start $name ($backend): $flags"
  # shellcheck disable=SC2086  # the flags are words
  KERAS_BACKEND=$backend XLA_PYTHON_CLIENT_MEM_FRACTION=0.2 OMP_NUM_THREADS=3 PYTHONUNBUFFERED=1 \
    timeout -s INT -k 20 $((TRAIN_SECONDS + ${GRACE:-60})) "$PYTHON" -m boneage -v train --data "$DATA" $COMMON $flags \
    --time-limit "$TRAIN_SECONDS" --fit-epochs-to-time --output "$WORK/runs/$name" > "$WORK/runs/$name.log" 2>&1 &
  pids+=($!)
done < "$RUNS"
for pid in "${pids[@]}"; do wait "$pid"; done
stamp "training done"
for log in "$WORK"/runs/*.log; do echo "== $log"; tr '\r' '\n' < "$log" | grep -v -E '^\s*[0-9]+/[0-9]+ |━' | tail -8; done
KERAS_BACKEND=$(awk '!/^#/ && NF {print $2; exit}' "$RUNS") "$PYTHON" tools/gpu/collect.py pack "$WORK/runs" "$OUT" --models "$MODELS"
stamp "collected in $OUT"
