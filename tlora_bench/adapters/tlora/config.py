"""The T-LoRA family's hyperparameters, their checks, the rank rule of a layer and the registration of lora,
vanilla-tlora, ortho-lora and tlora (the formulas: `layer.py`; docs/decisions.md section 1). No torch."""

from __future__ import annotations

from dataclasses import dataclass

from tlora_bench.adapters.config import AdapterConfig, LayerShape
from tlora_bench.adapters.registry import MethodSpec, register_method
from tlora_bench.errors import TloraBenchError, unknown_name_error

INITS = ("gaussian", "svd")
SVD_SOURCES = ("R", "W")  # R: a random matrix (the paper's choice); W: the frozen base weight (PiSSA-like)
SVD_COMPONENTS = ("last", "top", "middle")  # which r singular triplets (paper Figure 5)


@dataclass(frozen=True)
class TLoRAConfig(AdapterConfig):
    r: int = 64  # rank r of the update
    r_min: int | None = None  # r_min: the rank at t = T; default r // 2 (the paper's default)
    gamma: float = 1.0  # exponent of the rank schedule (authors' code; 1 = the paper's linear schedule)
    mask: bool = True  # apply M_t: the rank depends on the timestep
    init: str = "svd"  # "gaussian" (LoRA) or "svd" (orthogonal factors with frozen copies)
    svd_source: str = "R"  # matrix whose SVD gives the factors: "R" random, "W" base weight
    svd_components: str = "last"  # "last", "top" or "middle" r components of that SVD
    alpha: float | None = None  # scale alpha / r; None: scale 1 (the authors' code)
    num_train_timesteps: int = 1000  # T of the schedule: the scheduler's num_train_timesteps

    def __post_init__(self) -> None:
        r_min = check_rank_bounds(self.r, self.r_min)  # validates r for every member, r_min where it is used
        object.__setattr__(self, "r_min", r_min if self.mask else self.r_min)
        for key, value, allowed in (("init", self.init, INITS), ("svd_source", self.svd_source, SVD_SOURCES),
                                    ("svd_components", self.svd_components, SVD_COMPONENTS)):
            if value not in allowed:
                raise unknown_name_error(f"{key} value", value, allowed)
        if self.gamma <= 0:
            raise TloraBenchError(f"gamma must be positive, got {self.gamma}")
        if self.alpha is not None and self.alpha <= 0:  # a negative scale flips the update; zero removes it
            raise TloraBenchError(f"alpha must be positive (the update is scaled by alpha / r), got {self.alpha}")
        if self.num_train_timesteps < 1:
            raise TloraBenchError(f"num_train_timesteps must be at least 1, got {self.num_train_timesteps}")

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.r

    def layer_problem(self, layer: LayerShape) -> str | None:
        """Above min(out, in) the extra components add parameters and no rank (and an SVD has no more)."""
        most = min(layer.out_features, layer.in_features)
        if self.r <= most:
            return None
        why = f"an SVD init has at most {most} components" if self.init == "svd" else \
            f"its update has rank at most {most}"
        return (f"rank r={self.r} is impossible for layer '{layer.name}' ({layer.out_features}x{layer.in_features}): "
                f"{why}; lower r")


def check_rank_bounds(r: int, r_min: int | None) -> int:
    """Validate r and r_min; return r_min (default r // 2, the paper's choice, at least 1)."""
    if not isinstance(r, int) or r < 1:
        raise TloraBenchError(f"rank r must be a positive integer, got {r!r}")
    r_min = max(1, r // 2) if r_min is None else r_min
    if r_min < 1:
        raise TloraBenchError(f"r_min must be at least 1, got {r_min}")
    if r < r_min:
        raise TloraBenchError(f"rank r={r} is smaller than r_min={r_min}; choose r >= r_min")
    return r_min


_FAMILY = dict(config_cls=TLoRAConfig, layer="tlora_bench.adapters.tlora.layer:TLoRALinear", family="low-rank",
               size_field="r", weight_decay=1e-4, lr=1e-4)
register_method(MethodSpec(name="lora", summary="LoRA: ΔW = B A", fixed={"mask": False, "init": "gaussian"},
                           steps=500, **_FAMILY))
register_method(MethodSpec(name="vanilla-tlora", summary="Vanilla T-LoRA: ΔW_t = B M_t A",
                           fixed={"mask": True, "init": "gaussian"}, steps=500, mergeable=False, **_FAMILY))
register_method(MethodSpec(name="ortho-lora", summary="Ortho-LoRA: ΔW = B S A − B0 S0 A0 (SVD init)",
                           fixed={"mask": False, "init": "svd"}, steps=800, **_FAMILY))
register_method(MethodSpec(name="tlora", summary="T-LoRA: ΔW_t = B S M_t A − B0 S0 M_t A0 (paper eq. 6)",
                           fixed={"mask": True, "init": "svd"}, steps=800, mergeable=False, **_FAMILY))
