"""When torch arrives: the ``torch.library`` ops registered, whatever the order of the imports.

``import nvfp4_driver`` never imports torch (it costs seconds and a process may never use it). So
the ops of ``nvfp4_driver.torch_ops`` are registered at whichever comes second:

- torch already imported: at the end of ``import nvfp4_driver`` (``install(load_hooks)``);
- torch imported later: right after torch's own import finishes. A finder on ``sys.meta_path``
  notices the import of the top-level ``torch`` module and runs the registration after it (once;
  it then leaves ``sys.meta_path``). torch offers no hook of its own for this: ``torch.ops.<ns>``
  resolves names through the dispatcher only, and its ``torch.backends`` entry points serve
  installed device backends, not a package on PYTHONPATH.

After that, the public functions ask this module (``traced(name)``) whether ``torch.compile`` is
tracing them, and for the op-calling form that dynamo should trace instead. This module imports
nothing of the package: the package's ``__init__`` hands ``install`` the function that imports
``torch_ops`` (registering the ops) and returns what it offers (``torch_ops.compile_hooks()``), and
this module keeps what it was given. Nothing else is written anywhere.
"""
from __future__ import annotations

import importlib.abc
import sys
import warnings

# Filled once torch is imported (``_register``): torch.compiler.is_compiling, and the public
# functions' traced forms by name ({"group_gemm": fn, "quantize_activations": fn, ...}).
is_compiling = None
traced_forms: dict = {}

_registered = [False]
_load_hooks: list = [None]  # install()'s argument: imports torch_ops, returns (is_compiling, traced_forms)


def install(load_hooks) -> None:
    """Register now if torch is imported, else once it is (called at the end of the package import
    with ``load_hooks``, the function that imports torch_ops and returns its compile hooks)."""
    _load_hooks[0] = load_hooks
    if "torch" in sys.modules:
        _register()
    elif not any(isinstance(f, _TorchImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchImportFinder())


def ensure_registered() -> None:
    """Register now (torch must be imported): for a torch tensor seen before the finder ran, e.g.
    torch imported by a thread while this package was being imported."""
    if not _registered[0]:
        _register()


def _register() -> None:
    # No lock of our own: torch_ops registers in its module body, which the import system runs
    # once, and two threads getting here both store the same hooks.
    global is_compiling, traced_forms
    torch = sys.modules["torch"]
    if hasattr(getattr(torch, "library", None), "custom_op"):  # torch >= 2.4; older: no torch.compile support
        is_compiling, traced_forms = _load_hooks[0]()
    _registered[0] = True


class _TorchImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for ``torch`` it asks the finders behind it and wraps the loader they
    give, so that ``_register`` runs right after torch's module body."""

    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _RegisterAfter(spec.loader, self)
        return spec


class _RegisterAfter(importlib.abc.Loader):
    """torch's own loader, then the registration; the module keeps torch's loader, not this one."""

    def __init__(self, loader, finder: _TorchImportFinder):
        self._loader, self._finder = loader, finder

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self._loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)  # torch's import; an ImportError leaves the finder in place
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        try:
            _register()
        except Exception as exc:  # noqa: BLE001 - reported, not swallowed: `import torch` must not fail for us
            warnings.warn(f"nvfp4_driver could not register its torch.library ops after `import torch` "
                          f"({type(exc).__name__}: {exc}); torch.compile cannot trace nvfp4_driver calls. "
                          f"Import nvfp4_driver.torch_ops to see the full error", RuntimeWarning, stacklevel=2)


def traced(name: str):
    """The op-calling form of public function ``name`` while torch.compile traces, else None."""
    if is_compiling is not None and is_compiling():
        return traced_forms[name]
    return None
