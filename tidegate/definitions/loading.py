"""Find the ``Definitions`` object of user code, the same way in every process.

A code location is ``-m package.module`` or ``-f path/to/file.py``, optionally followed by
``:attribute``. Processes that get neither read ``TIDEGATE_DEFINITIONS`` (same syntax; a
value ending in ``.py`` or containing a ``/`` is a file). Every tidegate process sets that
variable for its children, so a Celery prefork child loads what its parent loaded.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from tidegate.definitions.defs import Definitions, DefinitionsLoader
from tidegate.errors import DefinitionError, DefinitionsLoadError

ENV_VAR = "TIDEGATE_DEFINITIONS"


@dataclass(frozen=True)
class CodeLocation:
    """Where user code lives: a module name or a file path, and an optional attribute."""

    module: str | None = None
    file: str | None = None
    attribute: str | None = None

    def __post_init__(self) -> None:
        if (self.module is None) == (self.file is None):
            raise DefinitionsLoadError("give exactly one of a module (-m) or a file (-f)")

    @classmethod
    def parse(cls, text: str) -> CodeLocation:
        target, _, attribute = text.partition(":")
        if target.endswith(".py") or "/" in target or os.sep in target:
            return cls(file=target, attribute=attribute or None)
        return cls(module=target, attribute=attribute or None)

    @classmethod
    def from_env(cls) -> CodeLocation:
        value = os.environ.get(ENV_VAR)
        if not value:
            raise DefinitionsLoadError(f"no code location: pass -m package.module or -f file.py, or set {ENV_VAR}")
        return cls.parse(value)

    def __str__(self) -> str:
        target = self.module if self.module is not None else str(Path(self.file or "").resolve())
        return f"{target}:{self.attribute}" if self.attribute else target

    @property
    def name(self) -> str:
        """The location's name, the same on every host: the module, or the file's name (not
        its path, which differs between machines). The attribute only picks a Definitions
        inside the location: ``defs.py:staging`` is still ``defs.py``."""
        return self.module if self.module is not None else Path(self.file or "").name

    def export(self) -> None:
        """Set ``TIDEGATE_DEFINITIONS`` so that child processes load the same code."""
        os.environ[ENV_VAR] = str(self)

    def load(self) -> Definitions:
        module = self._import()
        defs = find_definitions(module, self.attribute, str(self))
        defs.code_location = self.name  # its runs are tagged with it (CODE_LOCATION_TAG)
        return defs

    def _import(self) -> ModuleType:
        if self.module is not None:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            try:
                return importlib.import_module(self.module)
            except DefinitionError:
                raise
            except ModuleNotFoundError as exc:
                if exc.name and (exc.name == self.module or self.module.startswith(exc.name + ".")):
                    raise DefinitionsLoadError(f"code location '{self.module}': no such module") from exc
                raise DefinitionsLoadError(f"code location '{self.module}': import failed: {exc!r}") from exc
            except Exception as exc:
                raise DefinitionsLoadError(f"code location '{self.module}': import failed: {exc!r}") from exc
        path = Path(self.file or "").resolve()
        if not path.is_file():
            raise DefinitionsLoadError(f"code location '{self.file}': no such file")
        return import_file(path, self.file or str(path))


_loaded_files: dict[str, Path] = {}  # module name -> the -f file imported under it
_added_paths: set[str] = set()  # directories put on sys.path for -f files


def import_file(path: Path, label: str) -> ModuleType:
    """Import ``path`` as the top-level module named after its stem, its directory on sys.path.

    As Dagster does for ``python_file``: the name depends on the file name alone, so every
    process (beat, each worker, on any host) gives the module and the classes it defines the
    same name, and pickle finds ``defs.Batch`` wherever the file is loaded, or simply importable
    from its directory. A stem that would shadow the standard library or another module is refused.
    """
    name = path.stem
    existing = sys.modules.get(name)
    if existing is not None and _same_file(getattr(existing, "__file__", None), path):
        return existing
    _check_module_name(name, path, label, existing)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise DefinitionsLoadError(f"code location '{label}': not importable")
    module = importlib.util.module_from_spec(spec)
    directory = str(path.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)  # let the file import its neighbours
        _added_paths.add(directory)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except DefinitionError:
        del sys.modules[name]
        raise
    except Exception as exc:
        del sys.modules[name]
        raise DefinitionsLoadError(f"code location '{label}': import failed: {exc!r}") from exc
    _loaded_files[name] = path
    return module


def _same_file(filename: str | None, path: Path) -> bool:
    return filename is not None and Path(filename).resolve() == path


def _check_module_name(name: str, path: Path, label: str, existing: ModuleType | None) -> None:
    taken_by: str | None = None
    if "." in name:
        taken_by = "nothing: a module name cannot contain '.'"
    elif name in sys.stdlib_module_names:
        taken_by = "Python's standard library"
    elif existing is not None and name not in _loaded_files:
        taken_by = getattr(existing, "__file__", None) or "a module already imported"
    elif existing is None:
        found = importlib.machinery.PathFinder.find_spec(name)
        origin = found.origin if found is not None else None
        if origin and not _same_file(origin, path) and str(Path(origin).parent) not in _added_paths:
            taken_by = origin
    if taken_by is not None:
        raise DefinitionsLoadError(
            f"code location '{label}': the file is imported as module '{name}', which is taken by {taken_by}; "
            "rename the file (or load a package with -m)"
        )


def find_definitions(module: ModuleType, attribute: str | None, label: str) -> Definitions:
    """The module's Definitions object or ``@definitions`` function (called now): the one named
    ``attribute``, else the only one, else the one named ``defs``."""
    if attribute is not None:
        value = getattr(module, attribute, None)
        if not isinstance(value, Definitions | DefinitionsLoader):
            raise DefinitionsLoadError(
                f"code location '{label}': {attribute!r} is not a Definitions object or @definitions function"
            )
        return _materialized(value)
    found = {name: v for name, v in vars(module).items() if isinstance(v, Definitions | DefinitionsLoader)}
    if len({id(v) for v in found.values()}) == 1:
        return _materialized(next(iter(found.values())))
    if "defs" in found:
        return _materialized(found["defs"])
    if not found:
        raise DefinitionsLoadError(f"code location '{label}': holds no Definitions object")
    raise DefinitionsLoadError(
        f"code location '{label}': several Definitions objects ({', '.join(sorted(found))}); name one with ':attribute'"
    )


def _materialized(value: Definitions | DefinitionsLoader) -> Definitions:
    return value.load() if isinstance(value, DefinitionsLoader) else value


def load_definitions(location: CodeLocation | None = None) -> Definitions:
    return (location or CodeLocation.from_env()).load()
