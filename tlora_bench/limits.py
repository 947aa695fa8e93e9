"""The ranges numeric options share: seeds and bootstrap resamples, checked the same way by every command
(config keys, `evaluate`, `study make|analyze`), so an impossible value is one line before any work."""

from __future__ import annotations

from tlora_bench.errors import TloraBenchError

# Every seed (base seeds of the seed rule, bootstrap and study seeds) is from 0 to MAX_SEED. The seed rule adds a
# template's code points and an image index to a base seed (docs/decisions.md section 4), so 2^62 leaves room
# for every image seed to fit the signed 64-bit integer that torch generators, numpy and the result tables hold.
MAX_SEED = 2**62
# Bootstrap resamples: 1,000 (the default) gives stable 95% intervals. They are drawn at once, as a resamples x
# items array of indices and one of values (8 bytes each): the caps keep a typo from asking for more memory than
# a machine has.
MAX_BOOTSTRAP = 1_000_000
MAX_BOOTSTRAP_BYTES = 4 * 1024**3


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python, never a count


def check_seed(seed: object, what: str) -> int:
    """`seed` as an int, or one line naming `what` (e.g. "--seed") and the allowed range."""
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise TloraBenchError(f"{what} must be an integer from 0 to 2^62 ({MAX_SEED:,}), got {seed!r}")
    return seed


def check_bootstrap(n_resamples: object, what: str, items: int = 1) -> int:
    """`n_resamples` as an int, or one line naming `what` (e.g. "--bootstrap") and the allowed range; the `items`
    (concepts, trials) resampled each time bound it further."""
    limit = max(1, min(MAX_BOOTSTRAP, MAX_BOOTSTRAP_BYTES // (16 * max(items, 1))))
    if not _is_int(n_resamples) or not 1 <= n_resamples <= limit:
        bound = f"{MAX_BOOTSTRAP:,}" if limit == MAX_BOOTSTRAP else (
            f"{limit:,} for {items:,} resampled items (their resamples must fit in "
            f"{MAX_BOOTSTRAP_BYTES // 1024**3} GiB)")
        raise TloraBenchError(f"{what} must be an integer from 1 to {bound}, got {n_resamples!r}")
    return n_resamples
