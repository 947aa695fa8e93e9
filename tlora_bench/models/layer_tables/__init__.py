"""Bundled layer tables of the registered backends (`tlora_bench.models.spec.BackendSpec.layer_table`)."""
