#!/usr/bin/env bash
# Before/after of the actor update on one GPU, each variant in its own process (bench/update_profile.py).
#   bash bench/update_profile_h200.sh OLD_SRC_DIR    # OLD_SRC_DIR: `git archive OLD strive | tar -x -C DIR`
set -uo pipefail
old=${1:?old source dir}
cd "$(dirname "$0")/.."
run() { python bench/update_profile.py "$@" 2>&1 | grep -E "^[a-z].*: \{" ; }
run --src="$old" --name=before_default default
run --src="$old" --name=before_no_ckpt "no gradient checkpointing"
run --name=after_default default
run --name=after_eager "eager (use_torch_compile=False)"
run --name=after_no_ckpt "no gradient checkpointing"
run --name=after_eager_no_ckpt "eager, no gradient checkpointing"
