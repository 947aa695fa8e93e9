"""PEFT adapter folders (`peft`): `adapter_config.json` and `adapter_model.safetensors`, as `save_pretrained`
writes them, with keys "base_model.model.<module>.<PEFT tensor>" ("...to_q.lora_A.weight").

tlora-bench's lora is PEFT's LoRA (lora_A = A, lora_B = B, lora_alpha = alpha or r): held exactly. Every
peft:<tuner> method is held as PEFT saves it. A PEFT LoRA folder imports as lora when PEFT's config adds nothing
tlora-bench's LoRA lacks (no DoRA, rsLoRA, per-layer ranks or bias), else as the peft:<tuner> method.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tlora_bench.adapters.formats.base import (
    CONFIG_KEY,
    AdapterFormat,
    config_from_record,
    load_tensors,
    recorded_config,
    register_format,
)
from tlora_bench.adapters.io import AdapterData
from tlora_bench.adapters.registry import METHODS, make_config
from tlora_bench.errors import TloraBenchError
from tlora_bench.fileio import atomic_write_bytes

PREFIX = "base_model.model."
WEIGHTS, CONFIG = "adapter_model.safetensors", "adapter_config.json"


class PeftFolder(AdapterFormat):
    name = "peft"
    summary = "a PEFT adapter folder (save_pretrained: adapter_config.json, adapter_model.safetensors)"
    holds = "lora, and every peft:<tuner> method"
    file_names = (WEIGHTS,)

    def detect(self, keys: set[str], path: Path) -> bool:
        return bool(keys) and all(k.startswith(PREFIX) for k in keys) and (path.parent / CONFIG).is_file()

    # -- import ----------------------------------------------------------------------------------------------
    def read(self, path: Path, options: dict[str, Any], model: str | None) -> AdapterData:
        tensors, metadata = load_tensors(path)
        peft_config = _peft_config(path.parent / CONFIG)
        strays = [k for k in tensors if not k.startswith(PREFIX)]
        if strays:
            raise TloraBenchError(f"'{path}': tensor '{strays[0]}' is not under '{PREFIX}'; not a PEFT adapter file")
        stripped = {k[len(PREFIX):]: v for k, v in tensors.items()}
        record = recorded_config(metadata)
        config = config_from_record(record, options) if record else _config(peft_config, stripped, options)
        if config.method == "lora":
            stripped = {k.replace(".lora_A.weight", ".A").replace(".lora_B.weight", ".B"): v
                        for k, v in stripped.items()}
        return AdapterData(config, stripped)

    # -- export ----------------------------------------------------------------------------------------------
    def write(self, data: AdapterData, out: Path) -> list[Path]:
        from safetensors.torch import save

        config = data.config
        targets = list(config.target_modules)
        if config.method == "lora":
            from peft import LoraConfig

            peft_config = LoraConfig(r=config.r, lora_alpha=config.r if config.alpha is None else config.alpha,
                                     target_modules=targets)
            names = {"A": "lora_A.weight", "B": "lora_B.weight"}
            tensors = {f"{PREFIX}{layer}.{names[k]}": v for layer, group in data.layers().items()
                       for k, v in group.items()}
        elif config.method.startswith("peft:"):
            peft_config = config.peft_config(targets)
            tensors = {PREFIX + k: v for k, v in data.tensors.items()}
        else:
            raise TloraBenchError(f"format 'peft' holds lora and the peft:<tuner> methods, not '{config.method}' "
                                  "(PEFT has no such tuner; export it as 'lycoris' or 'official-sdxl' if it is T-LoRA)")
        out.mkdir(parents=True, exist_ok=True)
        weights = out / WEIGHTS
        atomic_write_bytes(weights, save({k: v.contiguous() for k, v in tensors.items()},
                                         metadata={"format": "pt", CONFIG_KEY: json.dumps(config.to_dict())}))
        peft_config.save_pretrained(str(out))
        return [weights, out / CONFIG]


def _peft_config(path: Path) -> Any:
    from peft import PeftConfig

    if not path.is_file():
        raise TloraBenchError(f"PEFT adapter folder '{path.parent}' has no {CONFIG}")
    try:
        return PeftConfig.from_pretrained(str(path.parent))
    except Exception as e:  # PEFT raises ValueError, TypeError or JSON errors for a bad config
        raise TloraBenchError(f"'{path}' is not a PEFT config PEFT can read ({' '.join(str(e).split())[:160]})") \
            from None


def _config(peft_config: Any, tensors: dict[str, Any], options: dict[str, Any]) -> Any:
    targets = peft_config.target_modules
    if not isinstance(targets, (list, set, tuple)):
        raise TloraBenchError(f"the PEFT config's target_modules is the pattern {targets!r}; tlora-bench needs a list "
                              "of module names")
    targets = tuple(sorted(targets))
    peft_type = str(getattr(peft_config.peft_type, "value", peft_config.peft_type)).lower()
    if peft_type == "lora" and _plain_lora(peft_config) and "method" not in options:
        r = peft_config.r
        alpha = None if peft_config.lora_alpha == r else float(peft_config.lora_alpha)
        return make_config(f"lora-{r}", alpha=alpha, target_modules=targets, **options)
    name = options.pop("method", None) or ("peft:dora" if getattr(peft_config, "use_dora", False) else
                                           f"peft:{peft_type}")
    if name not in METHODS:
        raise TloraBenchError(f"PEFT tuner '{peft_type}' cannot be injected layer by layer (tlora-bench methods "
                              "list the PEFT tuners it runs)")
    spec = METHODS.get(name)
    values = {f: getattr(peft_config, f) for f in spec.config_cls.peft_fields if hasattr(peft_config, f)}
    values = {k: v for k, v in values.items() if k not in spec.fixed}
    return spec.config_cls.from_dict({"method": name, "target_modules": targets, **values, **options})


def _plain_lora(peft_config: Any) -> bool:
    return not (peft_config.use_dora or peft_config.use_rslora or peft_config.rank_pattern or
                peft_config.alpha_pattern or peft_config.bias != "none")


register_format(PeftFolder())
