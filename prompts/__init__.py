"""The bundled prompt sets, importable as `tlora_bench.bundled_prompts` (pyproject.toml maps this folder)."""
