"""Your own code: import paths ``package.module:name`` for models and datasets, and Python objects.

A model or dataset that is not built in is named by an import path, ``my_pkg.nets:build``: the
module is imported (looked up in the code folders given to :func:`add_code_paths` first, such as
a search space's folder, then the current directory, then the installed packages) and the
attribute after ``:`` taken from it (dots walk into it: ``nets:Factory.build``).

* A **model** is a class derived from ``torch.nn.Module`` or a callable returning one. Its
  parameters named ``num_classes`` and ``in_channels`` get the dataset's number of classes and
  the size of a sample's first dimension (an image's channels, a table row's features); one
  taking ``**kwargs`` gets ``num_classes``; other parameters keep their defaults.
* A **dataset** is a callable without required arguments returning the data
  (``layerout.data.UserData`` says what it may return).

Objects that are not importable by name (defined in a notebook or the running script, lambdas,
closures) are registered with :func:`register_object` under a name like ``__main__:build``; the
search sends them to its workers by value (see ``tuning.search``). Every problem is a one-line
:class:`UserError` naming the string and what is wrong with it.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import sys
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerout.errors import UserError

if TYPE_CHECKING:
    from torch import nn

IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
MODEL_ARGS = ("num_classes", "in_channels")
# this project's own code: shipped with the project (tuning.search), never as the user's
PROJECT_MODULES = ("layerout", "search_spaces", "tuning", "analysis", "tune_main")

_CODE_PATHS: list[str] = []  # folders this process added to the import path (in order)
_OBJECTS: dict[str, Any] = {}  # name -> a Python object given directly (see register_object)


def is_import_path(text: Any) -> bool:
    """True for ``module.sub:name`` (the syntax only; nothing is imported)."""
    return isinstance(text, str) and bool(IMPORT_PATH.match(text))


def names_user_code(text: Any) -> bool:
    """True for an import path or the name of an object given directly (:func:`register_object`)."""
    return is_import_path(text) or (isinstance(text, str) and text in _OBJECTS)


def one_line(exc: BaseException, limit: int = 240) -> str:
    """``Type: message`` on one line, shortened: for error messages about a user's code."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ------------------------------------------------------------------------------ where code is found
def add_code_paths(paths: list[str | os.PathLike]) -> list[str]:
    """Put ``paths`` (made absolute) at the front of the import path, first one first; returns them.

    A search adds its space file's folder and the current directory; a trial adds the folders the
    search found its code in; ``layerout.train`` adds the current directory and a policy's
    ``code_paths``. Folders that do not exist are skipped."""
    added = []
    for p in reversed([str(Path(p).expanduser().resolve()) for p in paths]):
        if not Path(p).is_dir():
            continue
        if p in sys.path:
            sys.path.remove(p)
        sys.path.insert(0, p)
        if p in _CODE_PATHS:
            _CODE_PATHS.remove(p)
        _CODE_PATHS.insert(0, p)
        added.insert(0, p)
    importlib.invalidate_caches()
    return added


def code_paths() -> list[str]:
    """The folders :func:`add_code_paths` added in this process, first searched first."""
    return list(_CODE_PATHS)


def _installed(path: str) -> bool:
    """True for a file inside the Python installation (site-packages, the standard library)."""
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    return any(Path(path).resolve().is_relative_to(Path(r).resolve()) for r in roots if r)


def module_location(spec: str) -> str | None:
    """The file or package folder of the top-level module of import path ``spec`` when it is the
    user's own code (not an installed package), else None: what a search ships to its workers."""
    if not is_import_path(spec) or spec in _OBJECTS:
        return None
    top = spec.split(":", 1)[0].split(".", 1)[0]
    if top == "__main__" or top in PROJECT_MODULES:
        return None
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if found is None:
        return None
    if found.submodule_search_locations:  # a package (or a namespace package: its first folder)
        where = next(iter(found.submodule_search_locations), None)
    else:
        where = found.origin
    if not where or not Path(where).exists() or _installed(where):
        return None
    return str(Path(where).resolve())


# ------------------------------------------------------------------------------ resolving
def register_object(obj: Any, name: str | None = None) -> str:
    """The name configs use for a Python object given directly (a model class or factory, a data
    function): its import path when importing that gives back the same object; else a name like
    ``__main__:build`` (or ``name``) under which this process's registry keeps the object."""
    if name is None:
        path = import_path_of(obj)
        if path is not None:
            return path
        base = f"{getattr(obj, '__module__', None) or '__main__'}:{getattr(obj, '__qualname__', type(obj).__name__)}"
        name, i = base, 1
        while name in _OBJECTS and _OBJECTS[name] is not obj:  # two lambdas: __main__:<lambda>, ...-2
            i += 1
            name = f"{base}-{i}"
    _OBJECTS[name] = obj
    return name


def import_path_of(obj: Any) -> str | None:
    """``module:qualname`` when importing it gives back ``obj`` itself (and the module is not
    ``__main__``, which a worker process does not share), else None."""
    mod, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not mod or not qual or mod == "__main__" or "<" in qual:
        return None
    try:
        found: Any = importlib.import_module(mod)
        for part in qual.split("."):
            found = getattr(found, part)
    except Exception:  # noqa: BLE001 - anything but "imports to the same object" means: not by name
        return None
    return f"{mod}:{qual}" if found is obj else None


def registered(name: str) -> bool:
    return name in _OBJECTS


def resolve(spec: str, field: str) -> Any:
    """The object an import path names; a one-line UserError ``<field>: <spec>: <problem>``."""
    if spec in _OBJECTS:
        return _OBJECTS[spec]
    if not is_import_path(spec):
        raise UserError(f"{field}: {spec!r} is not an import path like my_pkg.nets:build")
    mod_name, attr = spec.split(":", 1)
    try:
        obj: Any = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        missing = e.name or mod_name
        if mod_name == missing or mod_name.startswith(missing + "."):
            paths = code_paths() or [os.getcwd()]
            where = ", ".join(paths[:3]) + (", ..." if len(paths) > 3 else "")
            raise UserError(f"{field}: {spec}: cannot import {mod_name} (no module named {missing!r} in "
                            f"{where} or the installed packages)") from None
        raise UserError(f"{field}: {spec}: importing {mod_name} failed ({one_line(e)})") from None
    except SyntaxError as e:
        raise UserError(f"{field}: {spec}: importing {mod_name} failed (SyntaxError: {e.msg}, "
                        f"{e.filename} line {e.lineno})") from None
    except Exception as e:  # noqa: BLE001 - the user's module raised while importing
        raise UserError(f"{field}: {spec}: importing {mod_name} failed ({one_line(e)})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"{field}: {spec}: {mod_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


# ------------------------------------------------------------------------------ models
def model_from(obj: Any, spec: str, num_classes: int, in_channels: int, field: str = "model") -> nn.Module:
    """Build a model from ``obj`` (an nn.Module class or a callable returning a module)."""
    from torch import nn  # here, not at the top: the command lines import this module before torch is needed

    if isinstance(obj, nn.Module):
        raise UserError(f"{field}: {spec}: is a model instance ({type(obj).__name__}); name its class or a "
                        "function that builds it (every run needs a fresh model)")
    if not callable(obj):
        raise UserError(f"{field}: {spec}: is a {type(obj).__name__}, not an nn.Module class or a callable "
                        "returning a model")
    kwargs = _model_kwargs(obj, spec, num_classes, in_channels, field)
    try:
        model = obj(**kwargs)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's constructor failed
        shown = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        raise UserError(f"{field}: {spec}({shown}) failed ({one_line(e)})") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"{field}: {spec}: returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _model_kwargs(obj: Any, spec: str, num_classes: int, in_channels: int, field: str) -> dict[str, int]:
    """The keyword arguments a model callable takes among num_classes and in_channels."""
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):  # no signature to read (some builtins): call it without arguments
        return {}
    values = {"num_classes": num_classes, "in_channels": in_channels}
    kwargs = {k: values[k] for k in MODEL_ARGS if k in params
              and params[k].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    if not kwargs and any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = {"num_classes": num_classes}  # e.g. torchvision.models.resnet18(**kwargs)
    required = [n for n, p in params.items() if n not in kwargs and p.default is inspect.Parameter.empty
                and p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                               inspect.Parameter.KEYWORD_ONLY)]
    if required:
        raise UserError(f"{field}: {spec}: parameter {required[0]!r} has no default; a model callable may take "
                        "num_classes and in_channels (passed by name) and nothing else without a default")
    return kwargs


# ------------------------------------------------------------------------------ data functions
def call_data_function(spec: str, field: str = "dataset") -> Any:
    """What the data function named ``spec`` returns (checked by ``layerout.data``)."""
    fn = resolve(spec, field)
    if not callable(fn):
        raise UserError(f"{field}: {spec}: is a {type(fn).__name__}, not a function returning the data")
    try:
        params = inspect.signature(fn).parameters
        required = [n for n, p in params.items() if p.default is inspect.Parameter.empty
                    and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    except (TypeError, ValueError):
        required = []
    if required:
        raise UserError(f"{field}: {spec}: parameter {required[0]!r} has no default; a data function is called "
                        "without arguments")
    try:
        return fn()
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's function failed
        raise UserError(f"{field}: {spec}() failed ({one_line(e)})") from None
