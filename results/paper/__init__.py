"""The paper's reported tables, importable as `tlora_bench.paper_results` (pyproject.toml maps this folder)."""
