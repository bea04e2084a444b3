"""What every GraphQL resolver reads: the storage, the loaded code location and the caller's role.

The webserver builds one :class:`GraphQLContext` per request (after authenticating it); tests
build one directly and run the schema with ``schema.execute_sync``.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tidegate.definitions.defs import Definitions
from tidegate.definitions.loading import CodeLocation
from tidegate.errors import DefinitionsLoadError, TidegateError
from tidegate.names import Role
from tidegate.storage.api import Storage

if TYPE_CHECKING:
    from tidegate.broker import CeleryPublisher

REPOSITORY_NAME = "__repository__"  # Dagster's name of the one repository a Definitions object makes
PARTITION_SET_SUFFIX = "_partition_set"  # Dagster names a partitioned job's partition set <job>_partition_set


class Workspace:
    """The one code location the webserver serves, reloadable in place (``reloadRepositoryLocation``).

    ``location`` is None when the Definitions object was handed over directly (tests, embedding):
    such a workspace cannot reload."""

    def __init__(
        self,
        defs: Definitions,
        location: CodeLocation | None = None,
        *,
        on_reload: Callable[[Definitions], None] | None = None,
    ) -> None:
        self._defs = defs
        self.location = location
        self.on_reload = on_reload  # told the new Definitions (the webserver's REST routes serve them too)
        self._lock = threading.Lock()

    @property
    def defs(self) -> Definitions:
        return self._defs

    @property
    def name(self) -> str:
        """The location's name as Dagster's client sends it (``repositoryLocationName``)."""
        if self.location is not None:
            return self.location.name
        return self._defs.code_location or "tidegate"

    @property
    def reload_supported(self) -> bool:
        return self.location is not None

    def reload(self) -> Definitions:
        """Import the location's code again and serve the new Definitions; on an error the old
        ones stay served and the error propagates (a DefinitionError names what is wrong)."""
        if self.location is None:
            raise DefinitionsLoadError(f"code location '{self.name}': given as a Definitions object; cannot reload")
        location = self.location
        module = location.module or Path(location.file or "").stem
        with self._lock:
            try:
                if module in sys.modules:
                    importlib.reload(sys.modules[module])
                defs = location.load()
            except TidegateError:
                raise
            except Exception as exc:
                raise DefinitionsLoadError(f"code location '{self.name}': reload failed: {exc!r}") from exc
            self._defs = defs
            if self.on_reload is not None:
                self.on_reload(self._defs)
            return self._defs


def instigator_id(workspace: Workspace, name: str) -> str:
    """The opaque, stable id of a schedule or sensor (Dagster's ``id``/``selectorId``/``jobOriginId``
    are hashes of its origin too): the same on every webserver serving the same location."""
    origin = f"{workspace.name}/{REPOSITORY_NAME}/{name}"
    return hashlib.sha1(origin.encode(), usedforsecurity=False).hexdigest()


@dataclass
class GraphQLContext:
    """One request's view: storage, workspace, the caller (its token's name and role) and how to
    reach the broker."""

    storage: Storage
    workspace: Workspace
    role: Role
    caller: str  # the API token's name: the launched_by tag of the runs it launches
    publisher_factory: Callable[[], CeleryPublisher] | None = None
    _publisher: CeleryPublisher | None = field(default=None, init=False, repr=False)

    def allows(self, needed: Role) -> bool:
        return self.role.includes(needed)

    def publisher(self) -> CeleryPublisher:
        """The broker publisher (to revoke a canceled run's running steps), made on first use."""
        if self._publisher is None:
            if self.publisher_factory is not None:
                self._publisher = self.publisher_factory()
            else:
                from tidegate.broker import CeleryPublisher, get_app

                self._publisher = CeleryPublisher(get_app(), self.storage)
        return self._publisher
