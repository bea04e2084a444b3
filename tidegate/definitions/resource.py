"""Resources: shared clients and settings that assets receive by parameter name."""

from __future__ import annotations

import dataclasses
from typing import Any, dataclass_transform


@dataclass_transform(kw_only_default=True)
class ConfigurableResource:
    """Base for typed resources, written like Dagster's::

        class Warehouse(tg.ConfigurableResource):
            dsn: str
            timeout: float = 30.0

    Subclasses become keyword-only dataclasses. An asset that annotates a parameter with a
    subclass asks for that resource by the parameter's name.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__dataclass_fields__" not in cls.__dict__:
            # repr=False: a generated __repr__ would replace the one below and print secrets.
            dataclasses.dataclass(kw_only=True, repr=False)(cls)

    def __repr__(self) -> str:
        # Field values may hold secrets (passwords in DSNs); name only the fields.
        names = ", ".join(f.name for f in dataclasses.fields(self))  # type: ignore[arg-type]
        return f"{type(self).__name__}({names})"
