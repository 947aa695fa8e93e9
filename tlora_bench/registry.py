"""Name -> object registries with did-you-mean errors (methods, backends, metrics, segmenters, extractors).

A registry may name an entry-point group: installed distributions extend it there (`docs/extending.md`). Plugins
load on the first lookup, as pytest's and lm-evaluation-harness's do; a plugin that fails to import, or whose
name is taken, is one line on stderr naming it, and everything else keeps working.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, Generic, TypeVar

from tlora_bench.errors import TloraBenchError, unknown_name_error

T = TypeVar("T")


def resolve_object(ref: Any, what: str) -> Any:
    """`ref` itself, or the object a "module:attr" string names (imported now)."""
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    try:
        found = importlib.import_module(module)
        for part in attr.split(".") if attr else []:
            found = getattr(found, part)
    except (ImportError, AttributeError) as e:
        raise TloraBenchError(f"{what} names '{ref}', which cannot be imported ({type(e).__name__}: {e})") from None
    return found


class Registry(Generic[T]):
    """An ordered mapping from a public name to a factory or a spec, for one kind of thing."""

    def __init__(self, kind: str, entry_points: str | None = None, item_type: type | None = None) -> None:
        self.kind = kind
        self.item_type = item_type  # what a plugin's object must be
        self.group = entry_points  # the entry-point group plugins extend this registry through
        self.register_plugin: Callable[[Any], Any] | None = None  # how a plugin's object is registered
        self.plugin_errors: dict[str, str] = {}  # entry point -> why it was skipped
        self._items: dict[str, T] = {}
        self._plugins_loaded = entry_points is None
        self._providers: dict[str, tuple[str, str]] = {}  # prefix -> ("module:function", what to install)
        self._provided: set[str] = set()

    def register(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        """Forget `name` (tests that register a plugin of their own remove it again)."""
        self._items.pop(name, None)

    def add_provider(self, prefix: str, loader: str, needs: str) -> None:
        """Names "<prefix>:..." come from another package: `loader` ("module:function") registers them, once, on
        the first lookup of such a name (the package and torch load then, never for other names). `needs` says
        what to install when it cannot import, e.g. "LyCORIS (pip install -e '.[lycoris]')"."""
        self._providers[prefix] = (loader, needs)

    def providers(self) -> list[str]:
        return list(self._providers)

    def load_provider(self, prefix: str) -> None:
        """Register the names of provider `prefix`; a missing package is one line saying what to install."""
        if prefix in self._provided:
            return
        loader, needs = self._providers[prefix]
        try:
            register = resolve_object(loader, f"{self.kind} provider '{prefix}'")
            register()
        except (ImportError, TloraBenchError) as e:
            if isinstance(e, TloraBenchError) and "cannot be imported" not in str(e):
                raise
            raise TloraBenchError(f"{self.kind}s '{prefix}:...' need {needs}; it is not installed or does not "
                                  f"import ({' '.join(str(e).split())[-160:]})") from None
        self._provided.add(prefix)

    def _provide(self, name: object) -> None:
        prefix, sep, _ = name.partition(":") if isinstance(name, str) else ("", "", "")
        if sep and prefix in self._providers and name not in self._items:
            self.load_provider(prefix)

    def get(self, name: str) -> T:
        self._load_plugins()
        self._provide(name)
        if name not in self._items:
            error = unknown_name_error(self.kind, name, self._items)
            skipped = "; ".join(self.plugin_errors.values())
            raise TloraBenchError(f"{error}{f' (skipped plugins: {skipped})' if skipped else ''}") from None
        return self._items[name]

    def names(self, providers: bool | str = False) -> list[str]:
        """The bundled and plugin names; `providers`: also every name the installed provider packages register
        (which imports them), or a prefix: that one provider's names. Without it the list never depends on what
        a process happened to look up."""
        self._load_plugins()
        wanted = set(self._providers) if providers is True else {providers} if providers else set()
        for prefix in wanted:
            with contextlib.suppress(TloraBenchError):  # a provider not installed adds no names
                self.load_provider(prefix)
        return [name for name in self._items
                if ":" not in name or name.partition(":")[0] in wanted or name.partition(":")[0] not in self._providers]

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        self._provide(name)
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True  # first: a plugin that looks a name up while loading sees the bundled ones
        for point in sorted(entry_points(group=self.group), key=lambda p: p.name):
            try:
                self._add_plugin(point.load())
            except Exception as e:  # any failure of someone else's code: skip it, say which and why
                why = f"plugin '{point.name}' ({self.group} = {point.value}): {type(e).__name__}: {e}"
                self.plugin_errors[point.name] = " ".join(why.split())
                print(f"tlora-bench: warning: {self.plugin_errors[point.name]}; skipped", file=sys.stderr)

    def _add_plugin(self, loaded: Any) -> None:
        """A loaded entry point is a module that registered its objects on import, or an object (or a list of
        them) for `register_plugin`."""
        items = loaded if isinstance(loaded, (list, tuple)) else [loaded]
        for item in items:
            if isinstance(item, ModuleType) or any(item is known for known in self._items.values()):
                continue
            if self.register_plugin is None:
                raise TloraBenchError(f"{self.kind} plugins must register themselves on import")
            if self.item_type is not None and not isinstance(item, self.item_type):
                raise TloraBenchError(f"it names a {type(item).__name__}, not a {self.item_type.__name__} (or a "
                                      "module that registers one on import)")
            self.register_plugin(item)


__all__ = ["Registry", "TloraBenchError", "resolve_object"]
