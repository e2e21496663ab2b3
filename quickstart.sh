#!/usr/bin/env bash
# The main job on the embedded default, no Pi needed:
#   install → train on Fashion-MNIST → four TFLite variants → evaluation report
#   → the device daemon's pipeline, host-only, on synthetic camera frames with the int8 model.
# OUT=dir ./quickstart.sh writes somewhere other than ./out (replaced atomically on success).
set -euo pipefail
cd "$(dirname "$0")"
OUT="${OUT:-out}"

bash scripts/setup.sh
python -m host run --out "$OUT" --force
echo
echo "== host-only device: the daemon's pipeline on synthetic camera frames, int8 model =="
python -m device bench --manifest "$OUT/manifest.json" --variant int8 --source synthetic
echo
echo "report: $OUT/report.md   confusion matrix: $OUT/confusion_int8.png   manifest: $OUT/manifest.json"
