"""The reward examples/dapo_cpu.sh scores with: accuracy by the parity of the response's characters.

A random-weight tiny model cannot solve anything, so a real verifier would give every response 0 and dynamic
sampling would never find a group worth keeping. This rule splits any group of responses roughly in half, which
is all the DAPO run on the CPU needs: groups with and without a signal, and an `acc` entry for
algorithm.filter_groups.metric=acc (the same dict shape as verl's math_dapo scorer returns).
"""


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    acc = float(sum(map(ord, solution_str)) % 2 == 0)
    return {"score": acc, "acc": acc}
