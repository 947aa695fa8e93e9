"""T-LoRA's rank schedule r(t) and the way the current timesteps reach every adapted layer.

The schedule is a pure function so the trainer can use it on its own (e.g. to pick a timestep interval).
The timesteps of one forward pass live in a `TimestepState` shared by every layer of one model: set it
before the denoiser call, clear it after (`timesteps(model, t)`), or let a forward hook on the denoiser do
both (`install_timestep_hook`). A timestep-dependent layer that finds no timestep raises: a silent
full-rank pass would train or sample the wrong model.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator

import torch
from torch import nn

from tlora_bench.errors import TloraBenchError


class TimestepNotSetError(TloraBenchError):
    """A timestep-dependent adapter ran a forward pass with no timestep set."""


def rank_schedule(t: torch.Tensor | float, r: int, r_min: int, num_train_timesteps: int = 1000,
                  gamma: float = 1.0) -> torch.Tensor:
    """r(t) = floor(((T - t) / T)^gamma * (r - r_min)) + r_min, clamped to [r_min, r] (docs/decisions.md section 1).

    The paper's schedule (section 3.1) with the authors' exponent gamma (1 by default). Works on a python
    number or a tensor of timesteps (one per sample) and returns int64 ranks of the same shape.
    """
    if not 1 <= r_min <= r:
        raise TloraBenchError(f"rank schedule needs 1 <= r_min <= r, got r={r}, r_min={r_min}")
    T = num_train_timesteps
    remaining = (T - torch.as_tensor(t, dtype=torch.float64)).clamp(0, T)
    if gamma == 1.0:  # integer-exact for integer t: floor((T - t) * (r - r_min) / T)
        span = torch.floor(remaining * (r - r_min) / T)
    else:
        span = torch.floor((remaining / T).pow(gamma) * (r - r_min))
    return (span.to(torch.int64) + r_min).clamp(r_min, r)


class TimestepState:
    """The timesteps of the forward pass in flight, shared by every adapted layer of one model.

    Ranks r(t) and masks M_t are computed once per forward pass per (r, r_min, gamma, T), not per layer.
    """

    def __init__(self) -> None:
        self.t: torch.Tensor | None = None
        self._cache: dict[tuple, tuple[int | None, torch.Tensor]] = {}

    def set(self, t: torch.Tensor | float) -> None:
        t = torch.as_tensor(t).detach().reshape(-1)
        if t.numel() == 0:
            raise TloraBenchError("timesteps must hold at least one value")
        self.t, self._cache = t, {}

    def clear(self) -> None:
        self.t, self._cache = None, {}

    def ranks(self, layer_name: str, r: int, r_min: int, num_train_timesteps: int, gamma: float,
              batch: int) -> tuple[int | None, torch.Tensor]:
        """(shared rank or None, per-sample ranks of shape (batch,)) for this forward pass.

        A shared rank means every sample has the same r(t): layers slice instead of masking.
        """
        if self.t is None:
            raise TimestepNotSetError(
                f"adapter layer '{layer_name}' depends on the timestep but none is set; wrap the forward pass "
                "in `with timesteps(model, t):` or call install_timestep_hook(model)")
        key = (r, r_min, num_train_timesteps, gamma, batch)
        if key not in self._cache:
            per_sample = rank_schedule(self.t, r, r_min, num_train_timesteps, gamma)
            per_sample = _expand_to_batch(per_sample, batch, layer_name)
            shared = int(per_sample[0]) if bool((per_sample == per_sample[0]).all()) else None
            self._cache[key] = (shared, per_sample)
        return self._cache[key]


def _expand_to_batch(values: torch.Tensor, batch: int, layer_name: str) -> torch.Tensor:
    """One value per sample. A single value applies to all; classifier-free guidance doubles the batch
    ([uncond; cond]) and both halves take the same t, so a batch that is a multiple of len(t) tiles it."""
    if values.numel() == 1 or values.numel() == batch:
        return values.expand(batch) if values.numel() == 1 else values
    if batch % values.numel() == 0:
        return values.repeat(batch // values.numel())
    raise TloraBenchError(f"layer '{layer_name}' got a batch of {batch} but {values.numel()} timesteps; "
                          "pass one timestep per sample")


def timestep_state(model: nn.Module) -> TimestepState:
    """The state shared by the adapted layers of `model` (created when adapters are attached)."""
    state = getattr(model, "_tlora_timestep_state", None)
    if state is None:
        raise TloraBenchError(f"{type(model).__name__} has no timestep-dependent adapters attached")
    return state


@contextlib.contextmanager
def timesteps(model: nn.Module, t: torch.Tensor | float) -> Iterator[None]:
    """Make `t` (one per sample, or one for all) visible to every adapted layer for one forward pass."""
    state = timestep_state(model)
    state.set(t)
    try:
        yield
    finally:
        state.clear()


def install_timestep_hook(model: nn.Module, argument: str = "timestep",
                          to_train_timesteps: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """Set the state from the denoiser's own timestep argument on every call, and clear it afterwards.

    `to_train_timesteps` maps the model's argument to the scheduler's [0, T) scale (FLUX passes sigma,
    docs/decisions.md section 1: the timestep in r(t) is sigma x 1000). Returns the two hook handles.
    """
    state = timestep_state(model)
    signature = inspect.signature(model.forward)
    if argument not in signature.parameters:
        raise TloraBenchError(f"{type(model).__name__}.forward has no argument '{argument}'; name the argument "
                              "that carries the timestep")

    def before(module: nn.Module, args: tuple, kwargs: dict) -> None:
        bound = signature.bind_partial(*args, **kwargs).arguments
        if bound.get(argument) is None:
            raise TloraBenchError(f"{type(module).__name__} was called without '{argument}', so the adapters "
                                  "cannot see the timestep")
        t = torch.as_tensor(bound[argument])
        state.set(to_train_timesteps(t) if to_train_timesteps else t)

    def after(module: nn.Module, args: tuple, kwargs: dict, output) -> None:
        state.clear()

    return (model.register_forward_pre_hook(before, with_kwargs=True),
            model.register_forward_hook(after, with_kwargs=True, always_call=True))


def sigma_to_timestep(sigma: torch.Tensor, num_train_timesteps: int = 1000) -> torch.Tensor:
    """FLUX: the scheduler's timestep for r(t) is sigma x T (docs/decisions.md section 1)."""
    return sigma * num_train_timesteps
