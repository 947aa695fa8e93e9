"""LyCORIS network files (`lycoris`): what `LycorisNetwork.save_weights` writes, one group of tensors per layer
under "<prefix>_<module path with dots as underscores>" (prefix "lycoris", or kohya's "lora_unet" / "lora_te").

    LoRA   .lora_down.weight (r, in)   .lora_up.weight (out, r)   .alpha          = tlora-bench's lora A, B, alpha
    T-LoRA .q_layer.weight   .p_layer.weight   .lambda_layer (1, r)   .alpha      = tlora's A, B, S
           .base_q  .base_p  .base_lambda                                         = its frozen A0, B0, S0

LyCORIS's own save leaves the frozen copies out (its loader re-derives them from the base weight's principal SVD,
which is right only for its default init), so tlora-bench writes them too: `network.load_weights(file)` on a
network made by `create_lycoris` reads them (docs/interop.md). A T-LoRA file without them is refused on import.
The `lycoris:<algo>` methods export and import every tensor of their LyCORIS module as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tlora_bench.adapters.formats.base import (
    CONFIG_KEY,
    AdapterFormat,
    config_from_record,
    flat_names,
    load_tensors,
    recorded_config,
    register_format,
    require_model,
    target_suffixes,
)
from tlora_bench.adapters.io import AdapterData
from tlora_bench.adapters.registry import make_config
from tlora_bench.errors import TloraBenchError
from tlora_bench.fileio import atomic_write_bytes

PREFIXES = ("lycoris", "lora_unet", "lora_transformer")
LAYERS_KEY = "tlora_bench_layers"  # the dotted layer names, so a file tlora-bench wrote imports without --model
LORA = {"A": "lora_down.weight", "B": "lora_up.weight"}
TLORA = {"A": "q_layer.weight", "B": "p_layer.weight", "S": "lambda_layer", "A0": "base_q", "B0": "base_p",
         "S0": "base_lambda"}


class LycorisFile(AdapterFormat):
    name = "lycoris"
    summary = "a LyCORIS network file (LycorisNetwork.save_weights; also kohya's lora_unet_ LoRA files)"
    holds = "lora, tlora, ortho-lora, and every lycoris:<algo> method"
    file_names = ("lycoris.safetensors",)
    needs_model = True

    def detect(self, keys: set[str], path: Path) -> bool:
        return bool(keys) and all(k.split(".")[0].startswith(tuple(p + "_" for p in PREFIXES)) for k in keys)

    # -- import ----------------------------------------------------------------------------------------------
    def read(self, path: Path, options: dict[str, Any], model: str | None) -> AdapterData:
        tensors, metadata = load_tensors(path)
        groups: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            flat, _, tensor = key.partition(".")
            groups.setdefault(flat, {})[tensor] = value
        dotted = self._dotted(groups, metadata, model, path)
        record = recorded_config(metadata)
        method = (record or {}).get("method") or options.get("method")
        if (method or "").startswith("lycoris:"):
            ours = {f"{dotted[f]}.{k}": v for f, group in groups.items() for k, v in group.items()}
        else:
            ours = self._to_ours(groups, dotted, path)
        if record is not None:
            config = config_from_record(record, options)
        else:
            config = self._config(groups, ours, dotted, options)
        return AdapterData(config, ours)

    def _dotted(self, groups: dict[str, Any], metadata: dict[str, str], model: str | None,
                path: Path) -> dict[str, str]:
        try:
            recorded = json.loads(metadata[LAYERS_KEY]) if LAYERS_KEY in metadata else None
        except ValueError:  # a damaged record: resolve the names through the model instead
            recorded = None
        if isinstance(recorded, dict):
            return recorded
        table: dict[str, str] = {}
        for prefix in PREFIXES:
            table.update(flat_names(require_model(self, model), prefix))
        unknown = [flat for flat in groups if flat not in table]
        if unknown:
            raise TloraBenchError(f"'{path}': layer '{unknown[0]}' is no Linear of model '{model}' "
                                  f"({len(unknown)} such layers): the file is for another base model, or holds "
                                  "text-encoder layers, which tlora-bench does not adapt")
        return {flat: table[flat] for flat in groups}

    def _to_ours(self, groups: dict[str, dict[str, torch.Tensor]], dotted: dict[str, str],
                 path: Path) -> dict[str, torch.Tensor]:
        ours = {}
        for flat, group in groups.items():
            names = TLORA if "lambda_layer" in group else LORA
            expected = set(names.values()) | {"alpha"}
            if set(group) != expected:
                missing, extra = sorted(expected - set(group)), sorted(set(group) - expected)
                why = "LyCORIS's own save leaves out T-LoRA's frozen copies, and without them the update is " \
                    "unknown; export it with tlora-bench or LyCORIS's network.state_dict()" if \
                    "base_q" in missing else "tlora-bench imports LyCORIS LoRA and T-LoRA layers (and files it " \
                    "exported); for another algorithm pass --option method=lycoris:<algo>"
                raise TloraBenchError(f"'{path}': layer '{flat}' has {sorted(group)} (missing {missing}, unexpected "
                                      f"{extra}): {why}")
            for ours_name, theirs in names.items():
                value = group[theirs]
                ours[f"{dotted[flat]}.{ours_name}"] = value.reshape(-1) if ours_name in ("S", "S0") else value
        return ours

    def _config(self, groups: dict[str, dict[str, torch.Tensor]], ours: dict[str, torch.Tensor],
                dotted: dict[str, str], options: dict[str, Any]) -> Any:
        group = next(iter(groups.values()))
        tlora = "lambda_layer" in group
        r = int(group["q_layer.weight" if tlora else "lora_down.weight"].shape[0])
        alphas = {float(g["alpha"]) for g in groups.values() if "alpha" in g}
        if len(alphas) > 1:
            raise TloraBenchError(f"the file's layers have different alphas {sorted(alphas)}; tlora-bench's config "
                                  "has one")
        alpha = alphas.pop() if alphas else float(r)
        method = options.pop("method", None) or ("tlora" if tlora else "lora")
        lycoris = method.startswith("lycoris:")  # LyCORIS's config keeps alpha; ours: alpha 0 or r is scale 1
        fields = {"alpha": alpha if lycoris else None if alpha in (0.0, float(r)) else alpha,
                  "target_modules": target_suffixes(list(dotted.values()))}
        return make_config(f"{method}-{r}", **{**fields, **options})

    # -- export ----------------------------------------------------------------------------------------------
    def write(self, data: AdapterData, out: Path) -> list[Path]:
        from safetensors.torch import save

        config = data.config
        flat = {layer: f"lycoris_{layer}".replace(".", "_") for layer in data.layers()}
        if config.method.startswith("lycoris:"):
            theirs = {f"{flat[layer]}.{k}": v for layer, tensors in data.layers().items() for k, v in tensors.items()}
        elif config.method in ("lora", "tlora", "ortho-lora"):
            theirs = self._from_ours(data, flat)
        else:
            raise TloraBenchError(f"format 'lycoris' holds lora, tlora, ortho-lora and the lycoris:<algo> methods, "
                                  f"not '{config.method}'")
        metadata = {CONFIG_KEY: json.dumps(config.to_dict()), LAYERS_KEY: json.dumps({v: k for k, v in flat.items()})}
        out.mkdir(parents=True, exist_ok=True)
        path = out / self.file_names[0]
        atomic_write_bytes(path, save({k: v.contiguous() for k, v in theirs.items()}, metadata=metadata))
        return [path]

    def _from_ours(self, data: AdapterData, flat: dict[str, str]) -> dict[str, torch.Tensor]:
        config = data.config
        names = TLORA if config.init == "svd" else LORA
        alpha = torch.tensor(float(config.r if config.alpha is None else config.alpha))
        theirs = {}
        for layer, tensors in data.layers().items():
            for key, value in tensors.items():
                theirs[f"{flat[layer]}.{names[key]}"] = value.reshape(1, -1) if key in ("S", "S0") else value
            theirs[f"{flat[layer]}.alpha"] = alpha.clone()
        return theirs


register_format(LycorisFile())
