"""The T-LoRA authors' checkpoints (github.com/ControlGenAI/T-LoRA; docs/interop.md, "official formats").

SD-XL (`official-sdxl`): `unet.save_attn_procs` writes `pytorch_lora_weights.safetensors`, one attention processor
per attn1/attn2 with a layer for each of to_q, to_k, to_v and to_out[0]:
    <attn>.processor.to_q_lora.{q_layer.weight, p_layer.weight, lambda_layer, base_q.weight, base_p.weight,
    base_lambda}   (T-LoRA, `--trainer_type ortho_lora`: ΔW = P diag(λ m) Q − P0 diag(λ0 m) Q0)
    <attn>.processor.to_q_lora.{down.weight, up.weight}   (Vanilla T-LoRA, `--trainer_type lora`)
which are tlora-bench's A = Q, B = P, S = λ (a (1, r) row there), A0, B0, S0 = the frozen copies, kept as saved.
FLUX (`official-flux`): `torch.save` of `lora.pt`, vanilla layers only, seven per attention block:
    transformer_blocks.<i>.attn.processor.{to_q,to_k,to_v,to_out,to_q_proj,to_k_proj,to_v_proj}_lora.{down,up}.weight
and the same for single_transformer_blocks, whose to_out and *_proj layers the authors create and save but never
call (single blocks have no such projections): import drops them, export writes them as zeros.
The schedule's settings (min_rank, alpha_rank_scale, masking on or off) live in the run's `logs/hparams.yml`,
read when found beside the checkpoint; options override them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar

import torch

from tlora_bench.adapters.formats.base import (
    CONFIG_KEY,
    AdapterFormat,
    config_from_record,
    load_tensors,
    recorded_config,
    register_format,
)
from tlora_bench.adapters.io import AdapterData
from tlora_bench.adapters.registry import make_config
from tlora_bench.errors import TloraBenchError
from tlora_bench.fileio import atomic_write_bytes, atomic_write_text

ORTHO = {"A": "q_layer.weight", "B": "p_layer.weight", "S": "lambda_layer", "A0": "base_q.weight",
         "B0": "base_p.weight", "S0": "base_lambda"}
VANILLA = {"A": "down.weight", "B": "up.weight"}
SDXL_LAYERS = {"to_q": "to_q_lora", "to_k": "to_k_lora", "to_v": "to_v_lora", "to_out.0": "to_out_lora"}
FLUX_LAYERS = {**SDXL_LAYERS, "add_q_proj": "to_q_proj_lora", "add_k_proj": "to_k_proj_lora",
               "add_v_proj": "to_v_proj_lora"}
FLUX_UNUSED = ("to_out_lora", "to_q_proj_lora", "to_k_proj_lora", "to_v_proj_lora")  # in single blocks
SIG_TYPES = {"last": "last", "principal": "top", "middle": "middle"}  # theirs -> our svd_components


class _Official(AdapterFormat):
    layers: ClassVar[dict[str, str]] = {}
    file_name: ClassVar[str] = ""

    def detect(self, keys: set[str], path: Path) -> bool:
        flux = any(".processor.to_q_proj_lora." in k for k in keys)
        return bool(keys) and all(".processor.to_" in k for k in keys) and flux == (self.layers is FLUX_LAYERS)

    # -- import ----------------------------------------------------------------------------------------------
    def read(self, path: Path, options: dict[str, Any], model: str | None) -> AdapterData:
        tensors, metadata = load_tensors(path)
        ours, ortho = self._rename_in(tensors, path)
        some = next(iter(ours.values()))
        hparams = _hparams(path)
        config = recorded_config(metadata) or recorded_config(hparams)  # a lora.pt has no metadata: hparams.yml
        if config is None:
            config = self._config(ortho, int(some.shape[0]) if ortho else _rank(ours), hparams, options)
        else:
            config = config_from_record(config, options)
        return AdapterData(config, ours, {"official_hparams": str(hparams.get("_path", ""))} if hparams else {})

    def _rename_in(self, tensors: dict[str, torch.Tensor], path: Path) -> tuple[dict[str, torch.Tensor], bool]:
        theirs = {v: k for k, v in self.layers.items()}
        ortho = any(k.endswith(".lambda_layer") for k in tensors)
        names = {v: k for k, v in (ORTHO if ortho else VANILLA).items()}
        ours = {}
        for key, value in tensors.items():
            match = re.fullmatch(r"(.+)\.processor\.(to_\w+_lora)\.(.+)", key)
            if match is None or match[2] not in theirs or match[3] not in names:
                raise TloraBenchError(f"'{path}': tensor '{key}' is not in the authors' {self.name} layout "
                                      f"(<attention>.processor.<{'|'.join(theirs)}>.<{'|'.join(names)}>)")
            attention, layer, tensor = match.groups()
            if attention.startswith("single_transformer_blocks.") and layer in FLUX_UNUSED:
                continue  # created and saved by the authors' FLUX code, never called
            ours[f"{attention}.{theirs[layer]}.{names[tensor]}"] = value.reshape(-1) if names[tensor] in ("S", "S0") \
                else value
        return ours, ortho

    def _config(self, ortho: bool, r: int, hparams: dict[str, Any], options: dict[str, Any]) -> Any:
        masked = hparams.get("trainer_class", "sdxl_tlora") != "sdxl_lora" and hparams.get("tlora", True) is not False
        method = options.pop("method", None) or {(True, True): "tlora", (True, False): "ortho-lora",
                                                 (False, True): "vanilla-tlora", (False, False): "lora"}[ortho, masked]
        fields = {"r_min": hparams.get("min_rank"), "gamma": hparams.get("alpha_rank_scale")} if masked else {}
        if ortho and "sig_type" in hparams:
            fields["svd_components"] = SIG_TYPES.get(hparams["sig_type"], "last")
        fields = {k: v for k, v in fields.items() if v is not None}
        targets = tuple(self.layers)
        return make_config(f"{method}-{r}", target_modules=targets, **{**fields, **options})

    # -- export ----------------------------------------------------------------------------------------------
    def write(self, data: AdapterData, out: Path) -> list[Path]:
        config = data.config
        self._check_holds(config)
        names = ORTHO if config.init == "svd" else VANILLA
        theirs = {}
        for layer, tensors in data.layers().items():
            attention, projection = self._split(layer)
            for key, value in tensors.items():
                value = value.reshape(1, -1) if key in ("S", "S0") else value
                theirs[f"{attention}.processor.{self.layers[projection]}.{names[key]}"] = value.contiguous()
        self._fill_unused(theirs)
        out.mkdir(parents=True, exist_ok=True)
        weights = out / self.file_name
        self._save(theirs, weights, config)
        hparams = out / "hparams.yml"
        atomic_write_text(hparams, self._hparams_text(config) + _yaml({CONFIG_KEY: json.dumps(config.to_dict())},
                                                                      header=False))
        return [weights, hparams]

    def _check_holds(self, config: Any) -> None:
        holds = ("tlora", "ortho-lora", "vanilla-tlora", "lora") if self.layers is SDXL_LAYERS else \
            ("vanilla-tlora", "lora")
        if config.method not in holds:
            raise TloraBenchError(f"format '{self.name}' holds {', '.join(holds)}, not '{config.method}' (the "
                                  "authors' code has no such layer)")
        if config.alpha is not None:
            raise TloraBenchError(f"format '{self.name}' has no scale: the authors' layers add their update "
                                  f"unscaled, and this adapter scales it by alpha / r = {config.scale}")
        if self.layers is FLUX_LAYERS and config.mask and config.gamma != 1.0:
            raise TloraBenchError("format 'official-flux' has no schedule exponent (the authors' FLUX schedule is "
                                  f"linear); this adapter has gamma={config.gamma}")
        if set(config.target_modules) != set(self.layers):
            raise TloraBenchError(f"format '{self.name}' adapts exactly {', '.join(self.layers)} of every attention "
                                  f"block; this adapter's target_modules are {list(config.target_modules)}")

    def _split(self, layer: str) -> tuple[str, str]:
        """"a.attn1.to_out.0" -> ("a.attn1", "to_out.0")."""
        for projection in self.layers:
            if layer.endswith("." + projection):
                return layer[:-len(projection) - 1], projection
        raise TloraBenchError(f"format '{self.name}' has no layer for '{layer}'")

    def _fill_unused(self, theirs: dict[str, torch.Tensor]) -> None:
        pass

    def _save(self, theirs: dict[str, torch.Tensor], path: Path, config: Any) -> None:
        raise NotImplementedError

    def _hparams_text(self, config: Any) -> str:
        raise NotImplementedError


class OfficialSDXL(_Official):
    name = "official-sdxl"
    summary = "the T-LoRA authors' SD-XL checkpoint (unet.save_attn_procs: pytorch_lora_weights.safetensors)"
    holds = "tlora, ortho-lora, vanilla-tlora, lora (no alpha; every to_q, to_k, to_v, to_out.0)"
    file_names = ("pytorch_lora_weights.safetensors",)
    file_name = "pytorch_lora_weights.safetensors"
    layers = SDXL_LAYERS

    def _save(self, theirs: dict[str, torch.Tensor], path: Path, config: Any) -> None:
        from safetensors.torch import save

        atomic_write_bytes(path, save(theirs, metadata={"format": "pt", CONFIG_KEY: json.dumps(config.to_dict())}))

    def _hparams_text(self, config: Any) -> str:
        masked = config.mask
        lines = {"trainer_type": "ortho_lora" if config.init == "svd" else "lora",
                 "trainer_class": "sdxl_tlora" if masked else "sdxl_lora", "lora_rank": config.r,
                 "min_rank": config.r_min if masked else 1, "alpha_rank_scale": config.gamma if masked else 1.0,
                 "sig_type": {v: k for k, v in SIG_TYPES.items()}[config.svd_components]}
        return _yaml(lines)


class OfficialFlux(_Official):
    name = "official-flux"
    summary = "the T-LoRA authors' FLUX checkpoint (torch.save of the attention processors: lora.pt)"
    holds = "vanilla-tlora, lora (no alpha; the seven attention projections of every block)"
    file_names = ("lora.pt",)
    file_name = "lora.pt"
    layers = FLUX_LAYERS

    def _split(self, layer: str) -> tuple[str, str]:
        """"a.attn1.to_out.0" -> ("a.attn1", "to_out.0")."""
        for projection in self.layers:
            if layer.endswith("." + projection):
                return layer[:-len(projection) - 1], projection
        raise TloraBenchError(f"format '{self.name}' has no layer for '{layer}'")

    def _fill_unused(self, theirs: dict[str, torch.Tensor]) -> None:
        """The authors' processors have all seven layers in single blocks too: zeros where no model calls them."""
        for key in [k for k in theirs if k.startswith("single_transformer_blocks.") and ".to_q_lora." in k]:
            for unused in FLUX_UNUSED:
                theirs.setdefault(key.replace(".to_q_lora.", f".{unused}."), torch.zeros_like(theirs[key]))

    def _save(self, theirs: dict[str, torch.Tensor], path: Path, config: Any) -> None:
        import io

        buffer = io.BytesIO()
        torch.save(theirs, buffer)
        atomic_write_bytes(path, buffer.getvalue())

    def _hparams_text(self, config: Any) -> str:
        return _yaml({"rank": config.r, "min_rank": config.r_min if config.mask else 1, "tlora": bool(config.mask)})


def _rank(tensors: dict[str, torch.Tensor]) -> int:
    return int(next(v for k, v in tensors.items() if k.endswith(".A")).shape[0])


def _hparams(path: Path) -> dict[str, Any]:
    """The authors' run settings: hparams.yml beside the checkpoint, or <exp>/logs/hparams.yml above
    <exp>/checkpoint-N/; {} when there is none."""
    import yaml

    for candidate in (path.parent / "hparams.yml", path.parent.parent / "logs" / "hparams.yml"):
        if candidate.is_file():
            try:
                loaded = yaml.safe_load(candidate.read_text(encoding="utf-8"))
            except (yaml.YAMLError, UnicodeDecodeError) as e:
                raise TloraBenchError(f"'{candidate}' is not valid YAML ({' '.join(str(e).split())[:120]})") from None
            return {**loaded, "_path": str(candidate)} if isinstance(loaded, dict) else {}
    return {}


def _yaml(values: dict[str, Any], header: bool = True) -> str:
    import yaml

    text = yaml.safe_dump(values, sort_keys=False, width=1000)
    return "# the authors' hparams.yml keys their inference reads (written by tlora-bench)\n" + text if header else text


register_format(OfficialSDXL())
register_format(OfficialFlux())
