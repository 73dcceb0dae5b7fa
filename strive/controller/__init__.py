"""Ray placement, worker processes and the calls that cross them. Imports ray (lazily from the trainer)."""
