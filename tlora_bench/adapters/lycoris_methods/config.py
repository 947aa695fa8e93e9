"""LyCORIS algorithms as methods: "lycoris:<algo>[-N]" (tlora, lokr, loha, locon, ...), N = LyCORIS's linear_dim.

Registered on the first lookup of a "lycoris:" name (`METHODS.add_provider`), when the optional LyCORIS package
is installed (`pip install -e '.[lycoris]'`). Options are LyCORIS's own arguments with LyCORIS's defaults
(docs/interop.md, docs/decisions.md section 1): `lycoris:tlora` is LyCORIS's T-LoRA as it ships, principal
components of the base weight scaled by alpha / r; the paper's recipe is `sig_type=last, use_data_init=false,
alpha=0, r_min=<r/2>`. No torch here: LyCORIS imports when a layer is built.
"""

from __future__ import annotations

from dataclasses import dataclass

from tlora_bench.adapters.config import AdapterConfig, LayerShape
from tlora_bench.adapters.registry import MethodSpec, register_method
from tlora_bench.adapters.tlora.config import check_rank_bounds
from tlora_bench.errors import TloraBenchError, unknown_name_error

PREFIX = "lycoris"
LAYER = "tlora_bench.adapters.lycoris_methods.layer:LycorisLayer"
SIG_TYPES = ("principal", "last", "middle")
TIMESTEP_ALGOS = ("tlora",)  # algorithms whose update depends on the timestep (a mask over rank components)


@dataclass(frozen=True)
class LycorisConfig(AdapterConfig):
    algo: str = "lora"  # LyCORIS's algo name (fixed by the method)
    r: int = 4  # linear_dim: the rank (LyCORIS's default 4)
    alpha: float = 1.0  # linear_alpha: the update is scaled by alpha / r; 0 means no scaling (LyCORIS's rule)
    dropout: float = 0.0
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    factor: int = -1  # LoKr: the Kronecker factor (-1: as square as possible)
    decompose_both: bool = False  # LoKr: factor both Kronecker matrices
    full_matrix: bool = False  # LoKr: no low-rank second factor
    weight_decompose: bool = False  # DoRA-style magnitude/direction split (LyCORIS's dora_wd)
    use_tucker: bool = False
    sig_type: str = "principal"  # T-LoRA: which singular triplets init the factors ("principal", "last", "middle")
    use_data_init: bool = True  # T-LoRA: SVD of the base weight (True) or of a random matrix (False)
    r_min: int | None = None  # T-LoRA: the rank at t = T; default 1 (LyCORIS's compute_timestep_mask)
    gamma: float = 1.0  # T-LoRA: exponent of the rank schedule (LyCORIS's alpha of compute_timestep_mask)
    num_train_timesteps: int = 1000  # T-LoRA: T of the schedule

    def __post_init__(self) -> None:
        r_min = check_rank_bounds(self.r, 1 if self.r_min is None else self.r_min)
        object.__setattr__(self, "r_min", r_min if self.timestep_dependent else self.r_min)
        if self.sig_type not in SIG_TYPES:
            raise unknown_name_error("sig_type value", self.sig_type, SIG_TYPES)
        if self.alpha < 0:
            raise TloraBenchError(f"alpha must be positive, or 0 for no scaling, got {self.alpha}")
        if self.gamma <= 0:
            raise TloraBenchError(f"gamma must be positive, got {self.gamma}")
        if self.num_train_timesteps < 1:
            raise TloraBenchError(f"num_train_timesteps must be at least 1, got {self.num_train_timesteps}")

    @property
    def timestep_dependent(self) -> bool:
        return self.algo in TIMESTEP_ALGOS

    def layer_problem(self, layer: LayerShape) -> str | None:
        """T-LoRA's SVD init has min(out, in) components; LyCORIS would pad the rest with zeros, silently."""
        if self.algo != "tlora" or layer.shape is None or len(layer.shape) < 2:
            return None
        most = min(layer.out_features, layer.in_features)
        if self.r <= most:
            return None
        return (f"rank r={self.r} is impossible for layer '{layer.name}' ({layer.out_features}x{layer.in_features}): "
                f"an SVD init has at most {most} components; lower r")


# LyCORIS 4.1's algorithm table (`lycoris.wrapper.network_module_dict`), written out so that planning a run
# never imports LyCORIS, and with it torch; a test checks it equals the installed table.
ALGORITHMS = ("lora", "locon", "loha", "lokr", "dylora", "glora", "full", "diag-oft", "boft", "ia3", "tlora")


def algorithms() -> list[str]:
    """The installed LyCORIS's algorithm names; a missing LyCORIS raises ImportError (found without importing)."""
    from importlib.util import find_spec

    if find_spec("lycoris") is None:
        raise ImportError("No module named 'lycoris'")
    return list(ALGORITHMS)


def register() -> None:
    """Register "lycoris:<algo>" for every algorithm of the installed LyCORIS."""
    from importlib.metadata import version

    release = version("lycoris-lora")
    for algo in algorithms():
        register_method(MethodSpec(
            name=f"{PREFIX}:{algo}", summary=f"LyCORIS {release} {algo}", config_cls=LycorisConfig, layer=LAYER,
            family="lycoris", fixed={"algo": algo}, size_field="r", mergeable=False,
            steps=800 if algo == "tlora" else 500))  # T-LoRA's step count wherever it comes from
