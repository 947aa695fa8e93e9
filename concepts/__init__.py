"""The bundled concept data, importable as `tlora_bench.bundled_concepts` (pyproject.toml maps this folder)."""
