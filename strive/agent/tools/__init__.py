"""Tools a model may call during a rollout: the interface (`base`), verl's tool YAML (`registry`), and strive's own
tools (`gsm8k`, `python_code`). Importing this package loads none of the tool modules."""
