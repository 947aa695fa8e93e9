"""Rewrite the bundled layer tables from the backends' skeletons: `python -m tlora_bench.models.layer_tables`
(after a diffusers upgrade changes a module tree; the tests say when)."""

from pathlib import Path

from tlora_bench.adapters.layer import layer_table
from tlora_bench.models import BACKENDS, backend_names
from tlora_bench.models.spec import table_bytes

for name in backend_names():
    spec = BACKENDS.get(name)
    if spec.bundled_table:
        path = Path(__file__).parent / f"{name}.json.gz"
        path.write_bytes(table_bytes(layer_table(spec.build_skeleton())))
        print(f"{path}: {path.stat().st_size:,} bytes")
