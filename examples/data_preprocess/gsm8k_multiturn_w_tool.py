"""Write GSM8K for tool-calling rollouts: each row asks the model to check its answer with the
`calc_gsm8k_reward` tool, names the `tool_agent` loop and carries the tool's ground truth in
`extra_info.tools_kwargs` (logic in `strive.data.gsm8k.make_multiturn_row`; docs/multiturn.md).

    python examples/data_preprocess/gsm8k_multiturn_w_tool.py --local_save_dir ~/data/gsm8k_tool \
        --local_dataset_path /path/to/gsm8k

Without --local_dataset_path it downloads `openai/gsm8k` with the optional `datasets` package.
"""

import os
import sys

try:
    from strive.data.gsm8k import main
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
    from strive.data.gsm8k import main

if __name__ == "__main__":
    main(multiturn=True)
