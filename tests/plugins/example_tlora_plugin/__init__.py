"""An example tlora-bench plugin (docs/extending.md): a method, a backend and a metric, one file each, registered
through the entry points in example_tlora_plugin-1.0.dist-info/entry_points.txt."""
