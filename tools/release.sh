#!/usr/bin/env bash
# Release a trained run as the default model, and measure it as the model card reports it.
#
#   tools/release.sh RUN VERSION [OUT]        e.g. tools/release.sh ../runs/densenet121-100-s6 0.4.0
#
# Exports fp32 and int8 ONNX (no .keras unless KERAS=1: a lean dry run) with an area resize for raw radiographs
# (the run trained on 100-px images; see docs/benchmarks.md, robustness), then evaluates both
# through the public API on (a) the run's validation ids in rsna-100 and (b) the same ids at higher
# resolution (rsna-512 and radiographs/), and runs the robustness benchmark. Reports go to
# OUT/reports (default: ../release-VERSION, outside the work tree). Needs the train extra and
# BONEAGE_DATA (default ../shared/data). MODELS=folder exports elsewhere than exported/ (a dry run).
# KERAS=1 keeps the float .keras beside the ONNX. FLOAT16=1 exports the float model with its weights
# stored in 16 bits (the .keras too) instead of an int8 model: the form shipped from 0.5.0, float's
# accuracy and robustness at 15 MB (docs/experiments.md). A release ships what MODELS holds then:
#   KERAS=1 FLOAT16=1 MODELS=../rel/models tools/release.sh RUN 0.5.0 ../rel
#   git rm exported/*; cp ../rel/models/* exported/
set -euo pipefail
usage() {  # as argparse says it: the usage, the problem, exit 2, and nothing created before
  echo "usage: tools/release.sh RUN VERSION [OUT]" >&2
  echo "release.sh: error: $*" >&2
  exit 2
}
[ $# -ge 2 ] && [ $# -le 3 ] || usage "wants a run folder and a version X.Y.Z, and an output folder if not ../release-VERSION"
run=$1; version=$2; out=${3:-../release-$version}
data=${BONEAGE_DATA:-../shared/data}
export BONEAGE_MODELS_DIR=${MODELS:-exported}
[ -d "$run" ] || usage "no such run folder: $run"
for file in config.json data.json; do
  [ -f "$run/$file" ] || usage "$run is not a training run: it has no $file"
done
semver='^[0-9]{1,9}\.[0-9]{1,9}\.[0-9]{1,9}([-+][0-9A-Za-z.-]{1,64})?$'  # boneage.release.VERSION
[[ $version =~ $semver ]] || usage "version $version is not semantic (X.Y.Z)"
for labels in rsna-100 rsna-512 radiographs; do
  [ -f "$data/$labels/labels.csv" ] || usage "needs the file $data/$labels/labels.csv (set BONEAGE_DATA)"
done
[ ! -e "$out" ] || [ -d "$out" ] || usage "$out exists and is not a folder"
mkdir -p "$out/reports"

python - "$run/config.json" > "$out/area.json" <<'PY'
import json, sys
steps = json.load(open(sys.argv[1]))["preprocessing"]["steps"]
for step in steps:
    if step["name"] == "resize":
        step["params"]["interpolation"] = "area"
print(json.dumps({"steps": steps}, indent=1))
PY

lean=--without-keras; [ "${KERAS:-0}" = 1 ] && lean=
form=(--quantize int8); models=(boneage-densenet121-"$version" boneage-densenet121-int8-"$version")
if [ "${FLOAT16:-0}" = 1 ]; then form=(--float16-weights); models=(boneage-densenet121-"$version"); fi
boneage export "$run" --version "$version" "${form[@]}" --default $lean \
    --preprocessing "$out/area.json" --output "$BONEAGE_MODELS_DIR" | tee "$out/export.log"

for model in "${models[@]}"; do
    boneage evaluate "$model" --data "$data/rsna-100/labels.csv:$data/rsna-100" --ids "$run/data.json" \
        --output "$out/reports/$model-a" --force
    boneage evaluate "$model" --data "$data/rsna-512/labels.csv:$data/rsna-512" \
        --data "$data/radiographs/labels.csv:$data/radiographs" --ids "$run/data.json" \
        --output "$out/reports/$model-b" --force
done
BONEAGE_DATA=$data python benchmarks/robustness.py boneage-densenet121-"$version" | tee "$out/reports/robustness.md"
