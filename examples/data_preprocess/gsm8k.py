"""Write GSM8K as verl-format `train.parquet` / `test.parquet` (logic in `strive.data.gsm8k`).

    python examples/data_preprocess/gsm8k.py --local_dir ~/data/gsm8k --local_dataset_path /path/to/gsm8k

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
    main()
