"""gsoft: `config` (its hyperparameters and registration, no torch) and `layer` (its torch layer)."""
