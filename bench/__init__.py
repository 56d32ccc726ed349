"""cc-hub bench: verify every claim of the model index by measuring it."""
