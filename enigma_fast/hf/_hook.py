"""Registering with ``transformers`` when its Auto classes are imported, without importing ``transformers``.

``import enigma_fast`` calls ``install()``: it costs a few microseconds and imports nothing. It puts a finder at the
front of ``sys.meta_path`` that watches three modules of ``transformers``; when one of them has finished loading
(whoever imports it, in whatever order), the matching registration of ``enigma_fast.hf.registration`` runs:

    transformers.models.auto.configuration_auto  -> register_configs     (AutoConfig)
    transformers.models.auto.tokenization_auto   -> register_tokenizers  (AutoTokenizer)
    transformers.models.auto.modeling_auto       -> register_models      (AutoModelFor...)

Modules already loaded when ``install`` runs are registered at once. Without ``transformers`` installed nothing ever
happens. A registration that fails inside someone else's import is logged (a warning), never raised there;
``import enigma_fast.hf`` then raises it where it can be seen.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
from types import ModuleType
from typing import Any

__all__ = ["TRIGGERS", "install"]

logger = logging.getLogger(__name__)

TRIGGERS = {
    "transformers.models.auto.configuration_auto": "register_configs",
    "transformers.models.auto.tokenization_auto": "register_tokenizers",
    "transformers.models.auto.modeling_auto": "register_models",
}


def _register(module_name: str) -> None:
    try:
        from enigma_fast.hf import registration

        getattr(registration, TRIGGERS[module_name])()
    except Exception as err:  # never break the import that triggered us
        logger.warning("enigma_fast could not register its models with transformers: %s: %s", type(err).__name__, err)


class _Loader(importlib.abc.Loader):
    """The original loader, then the registration for the module it loaded."""

    def __init__(self, loader: Any, name: str) -> None:
        self._loader, self._name = loader, name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _register(self._name)

    def __getattr__(self, name: str) -> Any:  # get_code, get_source, is_package, resource readers, ...
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: asks the finders after it, and wraps the loader of a watched module."""

    def find_spec(self, fullname: str, path: Any, target: ModuleType | None = None) -> Any:
        if fullname not in TRIGGERS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _Loader):
                    spec.loader = _Loader(spec.loader, fullname)
                return spec
        return None


def install() -> None:
    """Watch for the Auto modules (once per process); register those already imported."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    for name in TRIGGERS:
        if name in sys.modules:
            _register(name)
