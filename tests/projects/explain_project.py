"""An eager asset (labelled condition) below a plain one, for the webserver's "why / why not"
(tests/test_api.py, tests/test_ui.py): the default automation sensor evaluates it."""

from __future__ import annotations

import tidegate as tg


@tg.asset
def upstream_feed() -> int:
    return 1


@tg.asset(deps=[upstream_feed], automation_condition=tg.AutomationCondition.eager().with_label("keep fresh"))
def fresh_report() -> int:
    return 2


defs = tg.Definitions(assets=[upstream_feed, fresh_report])
