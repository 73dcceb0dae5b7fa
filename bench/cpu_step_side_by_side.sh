#!/usr/bin/env bash
# The demo configuration's step at two commits, one after the other on this machine (run nothing else meanwhile).
#   bash bench/cpu_step_side_by_side.sh OLD_CHECKOUT NEW_CHECKOUT [STEPS [SKIP [TAG]]]
# Each checkout runs `strive demo` with PYTHONPATH pointing at it (Ray's workers inherit it); then
# bench/cpu_step.py summarises both runs (leaving out the first SKIP steps, default 2) into
# bench/results/cpu_step_demo_{before,after}TAG.json.
set -euo pipefail
old=$(cd "$1" && pwd); new=$(cd "$2" && pwd); steps=${3:-12}; skip=${4:-2}; tag=${5:-}
here=$(cd "$(dirname "$0")/.." && pwd)
export HF_HUB_OFFLINE=1 RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled} PYTHONUNBUFFERED=1
for side in before after; do
  src=$old; [ "$side" = after ] && src=$new
  echo "$(date -u +%H:%M:%S) $side: $src"
  (cd "$src" && PYTHONPATH="$src" python -m strive.cli demo --steps "$steps" --out "/tmp/strive_cpu_step_$side" \
     > "/tmp/strive_cpu_step_$side.log" 2>&1)
  python "$here/bench/cpu_step.py" --from-run "/tmp/strive_cpu_step_$side" --skip "$skip" \
     --out "$here/bench/results/cpu_step_demo_$side$tag.json" > /dev/null
done
echo "$(date -u +%H:%M:%S) done"
