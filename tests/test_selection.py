"""Asset selections, as objects and as strings, against a small graph with a diamond.

raw_orders ──> cleaned_orders ──> orders_by_region ──> daily_report
     │                      └───> orders_by_day ────┘
     └──> archive/orders
raw_customers ──> customer_stats
"""

import re

import pytest

import tidegate as tg
from tidegate.definitions.graph import AssetGraph
from tidegate.definitions.selection import coerce_selection


@tg.asset(group_name="ingest")
def raw_orders() -> list[int]:
    return [1, 2, 3]


@tg.asset(group_name="ingest")
def raw_customers() -> list[str]:
    return ["ana"]


@tg.asset(group_name="sales", tags={"team": "finance"})
def cleaned_orders(raw_orders: list[int]) -> list[int]:
    return raw_orders


@tg.asset(group_name="sales")
def orders_by_region(cleaned_orders: list[int]) -> int:
    return 1


@tg.asset(group_name="sales", tags={"team": "finance", "tier": "gold"})
def orders_by_day(cleaned_orders: list[int]) -> int:
    return 1


@tg.asset(group_name="reporting", tags={"team": "ops"})
def daily_report(orders_by_region: int, orders_by_day: int) -> int:
    return orders_by_region + orders_by_day


@tg.asset(group_name="sales")
def customer_stats(raw_customers: list[str]) -> int:
    return len(raw_customers)


@tg.asset(key_prefix="archive", name="orders", group_name="archive", deps=[raw_orders])
def archive_orders() -> None:
    return None


ALL = [raw_orders, raw_customers, cleaned_orders, orders_by_region, orders_by_day, daily_report]
ALL += [customer_stats, archive_orders]


@pytest.fixture(scope="module")
def graph() -> AssetGraph:
    return tg.Definitions(assets=ALL).graph


def names(selection: tg.AssetSelection, graph: AssetGraph) -> set[str]:
    return {str(k) for k in selection.resolve(graph)}


def parse(text: str, graph: AssetGraph) -> set[str]:
    return names(tg.AssetSelection.from_string(text), graph)


EVERY = {
    "raw_orders",
    "raw_customers",
    "cleaned_orders",
    "orders_by_region",
    "orders_by_day",
    "daily_report",
    "customer_stats",
    "archive/orders",
}


# -- objects --------------------------------------------------------------------------------------


class TestSelectionObjects:
    def test_all(self, graph: AssetGraph) -> None:
        assert names(tg.AssetSelection.all(), graph) == EVERY

    def test_assets_by_definition_or_key(self, graph: AssetGraph) -> None:
        selection = tg.AssetSelection.assets(raw_orders, "daily_report", archive_orders)
        assert names(selection, graph) == {"raw_orders", "daily_report", "archive/orders"}

    def test_keys(self, graph: AssetGraph) -> None:
        selection = tg.AssetSelection.keys(tg.AssetKey(["archive", "orders"]), "raw_customers", ["orders_by_day"])
        assert names(selection, graph) == {"archive/orders", "raw_customers", "orders_by_day"}

    def test_groups(self, graph: AssetGraph) -> None:
        assert names(tg.AssetSelection.groups("ingest"), graph) == {"raw_orders", "raw_customers"}
        assert names(tg.AssetSelection.groups("ingest", "reporting"), graph) == {
            "raw_orders",
            "raw_customers",
            "daily_report",
        }
        assert names(tg.AssetSelection.groups("marketing"), graph) == set()

    def test_tag_with_and_without_value(self, graph: AssetGraph) -> None:
        assert names(tg.AssetSelection.tag("team", "finance"), graph) == {"cleaned_orders", "orders_by_day"}
        assert names(tg.AssetSelection.tag("team"), graph) == {"cleaned_orders", "orders_by_day", "daily_report"}
        assert names(tg.AssetSelection.tag("tier", "gold"), graph) == {"orders_by_day"}
        assert names(tg.AssetSelection.tag("team", "marketing"), graph) == set()

    def test_downstream(self, graph: AssetGraph) -> None:
        base = tg.AssetSelection.assets(raw_orders)
        assert names(base.downstream(), graph) == {
            "raw_orders",
            "cleaned_orders",
            "orders_by_region",
            "orders_by_day",
            "daily_report",
            "archive/orders",
        }
        assert names(base.downstream(depth=1), graph) == {"raw_orders", "cleaned_orders", "archive/orders"}
        assert names(base.downstream(depth=2), graph) == {
            "raw_orders",
            "cleaned_orders",
            "archive/orders",
            "orders_by_region",
            "orders_by_day",
        }
        assert names(base.downstream(depth=1, include_self=False), graph) == {"cleaned_orders", "archive/orders"}

    def test_upstream(self, graph: AssetGraph) -> None:
        base = tg.AssetSelection.assets(daily_report)
        assert names(base.upstream(), graph) == {
            "daily_report",
            "orders_by_region",
            "orders_by_day",
            "cleaned_orders",
            "raw_orders",
        }
        assert names(base.upstream(depth=1), graph) == {"daily_report", "orders_by_region", "orders_by_day"}
        assert names(base.upstream(depth=2, include_self=False), graph) == {
            "orders_by_region",
            "orders_by_day",
            "cleaned_orders",
        }

    def test_depth_zero_is_the_selection_itself(self, graph: AssetGraph) -> None:
        assert names(tg.AssetSelection.assets(cleaned_orders).downstream(depth=0), graph) == {"cleaned_orders"}

    def test_diamond_is_reached_once(self, graph: AssetGraph) -> None:
        # daily_report is two hops from cleaned_orders along both sides of the diamond
        selection = tg.AssetSelection.assets(cleaned_orders).downstream(depth=2, include_self=False)
        assert names(selection, graph) == {"orders_by_region", "orders_by_day", "daily_report"}

    def test_traversal_of_a_group_excluding_itself(self, graph: AssetGraph) -> None:
        selection = tg.AssetSelection.groups("sales").downstream(include_self=False)
        assert names(selection, graph) == {"daily_report"}
        selection = tg.AssetSelection.groups("sales").upstream(include_self=False)
        assert names(selection, graph) == {"raw_orders", "raw_customers"}

    def test_union(self, graph: AssetGraph) -> None:
        selection = tg.AssetSelection.groups("ingest") | tg.AssetSelection.keys("daily_report")
        assert names(selection, graph) == {"raw_orders", "raw_customers", "daily_report"}

    def test_intersection(self, graph: AssetGraph) -> None:
        selection = tg.AssetSelection.groups("sales") & tg.AssetSelection.tag("team", "finance")
        assert names(selection, graph) == {"cleaned_orders", "orders_by_day"}

    def test_difference(self, graph: AssetGraph) -> None:
        selection = tg.AssetSelection.assets(raw_orders).downstream() - tg.AssetSelection.tag("team")
        assert names(selection, graph) == {"raw_orders", "orders_by_region", "archive/orders"}
        assert names(tg.AssetSelection.all() - tg.AssetSelection.all(), graph) == set()

    def test_combinations_nest(self, graph: AssetGraph) -> None:
        selection = (tg.AssetSelection.groups("sales") - tg.AssetSelection.keys("customer_stats")).upstream(depth=1) | (
            tg.AssetSelection.tag("tier", "gold") & tg.AssetSelection.groups("reporting")
        )
        assert names(selection, graph) == {"raw_orders", "cleaned_orders", "orders_by_region", "orders_by_day"}

    def test_unknown_key_is_named(self, graph: AssetGraph) -> None:
        with pytest.raises(tg.InvalidSelectionError, match=re.escape("unknown asset(s): refunds, sales/returns")):
            tg.AssetSelection.keys("raw_orders", "refunds", "sales/returns").resolve(graph)

    def test_unknown_key_inside_a_combination_is_named(self, graph: AssetGraph) -> None:
        selection = tg.AssetSelection.groups("sales") | tg.AssetSelection.keys("refunds").downstream()
        with pytest.raises(tg.InvalidSelectionError, match=re.escape("unknown asset(s): refunds")):
            selection.resolve(graph)


# -- strings --------------------------------------------------------------------------------------


class TestSelectionStrings:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("raw_orders", {"raw_orders"}),
            ("key:raw_orders", {"raw_orders"}),
            ("raw_orders+", {"raw_orders", "cleaned_orders", "archive/orders"}),
            (
                "raw_orders++",
                {"raw_orders", "cleaned_orders", "archive/orders", "orders_by_region", "orders_by_day"},
            ),
            (
                "raw_orders*",
                {
                    "raw_orders",
                    "cleaned_orders",
                    "archive/orders",
                    "orders_by_region",
                    "orders_by_day",
                    "daily_report",
                },
            ),
            ("+daily_report", {"daily_report", "orders_by_region", "orders_by_day"}),
            ("++daily_report", {"daily_report", "orders_by_region", "orders_by_day", "cleaned_orders"}),
            (
                "*daily_report",
                {"daily_report", "orders_by_region", "orders_by_day", "cleaned_orders", "raw_orders"},
            ),
            ("+orders_by_day+", {"cleaned_orders", "orders_by_day", "daily_report"}),
            ("group:sales", {"cleaned_orders", "orders_by_region", "orders_by_day", "customer_stats"}),
            (
                "group:sales+",
                {"cleaned_orders", "orders_by_region", "orders_by_day", "customer_stats", "daily_report"},
            ),
            ("+group:reporting", {"daily_report", "orders_by_region", "orders_by_day"}),
            ("tag:team=finance", {"cleaned_orders", "orders_by_day"}),
            ("tag:team", {"cleaned_orders", "orders_by_day", "daily_report"}),
            ("tag:team=ops", {"daily_report"}),
            ("tag:team+", {"cleaned_orders", "orders_by_day", "orders_by_region", "daily_report"}),
            ("*", EVERY),
            ("raw_customers,daily_report", {"raw_customers", "daily_report"}),
            (" raw_customers ,  tag:tier=gold ", {"raw_customers", "orders_by_day"}),
            ("customer_stats, +daily_report", {"customer_stats", "daily_report", "orders_by_region", "orders_by_day"}),
            ("archive/orders", {"archive/orders"}),
            ("+archive/orders", {"archive/orders", "raw_orders"}),
            ("*, raw_orders", EVERY),
        ],
    )
    def test_string_form(self, graph: AssetGraph, text: str, expected: set[str]) -> None:
        assert parse(text, graph) == expected

    def test_string_and_object_forms_agree(self, graph: AssetGraph) -> None:
        pairs = [
            ("raw_orders++", tg.AssetSelection.keys("raw_orders").downstream(depth=2)),
            ("*daily_report", tg.AssetSelection.keys("daily_report").upstream()),
            ("group:sales+", tg.AssetSelection.groups("sales").downstream(depth=1)),
            (
                "tag:team=finance, raw_customers",
                tg.AssetSelection.tag("team", "finance") | tg.AssetSelection.keys("raw_customers"),
            ),
        ]
        for text, selection in pairs:
            assert parse(text, graph) == names(selection, graph), text

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "   ",
            ",",
            "raw_orders,",
            "raw_orders,,daily_report",
            "+",
            "++",
            "**",
            "raw_orders+daily_report",
            "raw_orders**",
            "raw_orders+*",
            "+*raw_orders",
            "raw orders",
            "sales//orders",
            "/orders",
            "1orders",
            "group:",
            "tag:",
            "tag:=finance",
        ],
    )
    def test_malformed_strings(self, text: str) -> None:
        with pytest.raises(tg.InvalidSelectionError, match=re.escape(f"selection {text!r}")):
            tg.AssetSelection.from_string(text)

    def test_malformed_clause_is_named(self) -> None:
        with pytest.raises(tg.InvalidSelectionError, match=re.escape("cannot parse clause 'b**'")):
            tg.AssetSelection.from_string("a, b**, c")

    def test_unknown_key_is_named(self, graph: AssetGraph) -> None:
        with pytest.raises(tg.InvalidSelectionError, match=re.escape("unknown asset(s): refunds")):
            parse("raw_orders, refunds+", graph)
        with pytest.raises(tg.InvalidSelectionError, match=re.escape("unknown asset(s): sales/orders")):
            parse("*sales/orders", graph)

    def test_unknown_group_or_tag_selects_nothing(self, graph: AssetGraph) -> None:
        assert parse("group:marketing", graph) == set()
        assert parse("tag:team=marketing", graph) == set()


class TestCoerceSelection:
    def test_none_is_everything(self, graph: AssetGraph) -> None:
        assert names(coerce_selection(None), graph) == EVERY

    def test_object_is_kept(self) -> None:
        selection = tg.AssetSelection.groups("sales")
        assert coerce_selection(selection) is selection

    def test_a_list_is_a_union(self, graph: AssetGraph) -> None:
        selection = coerce_selection(["raw_orders+", daily_report, tg.AssetKey(["archive", "orders"])])
        assert names(selection, graph) == {"raw_orders", "cleaned_orders", "archive/orders", "daily_report"}

    def test_an_empty_list_is_rejected(self) -> None:
        with pytest.raises(tg.InvalidSelectionError, match="selection is an empty list"):
            coerce_selection([])

    def test_a_malformed_string_in_a_list_is_rejected(self) -> None:
        with pytest.raises(tg.InvalidSelectionError, match=re.escape("selection 'raw_orders**'")):
            coerce_selection(["daily_report", "raw_orders**"])
