"""The pure definitions layer: asset keys, retry policies, @asset, Definitions, jobs and plans."""

import copy
import gc
import pickle
import random
import re
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tidegate as tg
from tidegate.definitions.asset import DEFAULT_GROUP, DEFAULT_IO_MANAGER_KEY, DEFAULT_QUEUE
from tidegate.definitions.job import IMPLICIT_ASSET_JOB

if TYPE_CHECKING:
    import decimal


class Warehouse(tg.ConfigurableResource):
    dsn: str
    timeout: float = 30.0


class TracedContext(tg.AssetExecutionContext):
    """A subclass of the context, to check detection by annotation covers subclasses."""


def exact(text: str) -> str:
    """A ``pytest.raises(match=...)`` pattern that matches ``text`` literally."""
    return re.escape(text)


# -- AssetKey ---------------------------------------------------------------------------------


class TestAssetKey:
    def test_single_name(self) -> None:
        key = tg.AssetKey("orders")
        assert key.path == ("orders",)
        assert str(key) == "orders"
        assert key.to_user_string() == "orders"
        assert repr(key) == "AssetKey(['orders'])"

    def test_path_of_names(self) -> None:
        key = tg.AssetKey(["sales", "orders"])
        assert key.path == ("sales", "orders")
        assert str(key) == "sales/orders"
        assert repr(key) == "AssetKey(['sales', 'orders'])"

    def test_user_string_is_split_on_slashes_and_stripped(self) -> None:
        assert tg.AssetKey.from_user_string("sales/eu/orders") == tg.AssetKey(["sales", "eu", "orders"])
        assert tg.AssetKey.from_user_string("  orders \n") == tg.AssetKey("orders")

    def test_a_slash_inside_one_part_is_not_a_separator(self) -> None:
        with pytest.raises(tg.InvalidDefinitionError, match=exact("invalid part 'sales/orders'")):
            tg.AssetKey("sales/orders")

    @pytest.mark.parametrize(
        ("path", "bad_part"),
        [
            ("", "''"),
            ("1orders", "'1orders'"),
            ("raw orders", "'raw orders'"),
            ("orders!", "'orders!'"),
            (["sales", ""], "''"),
            (["sales", "eu west"], "'eu west'"),
            (["sales", 3], "3"),
        ],
    )
    def test_invalid_parts_are_rejected_and_named(self, path: object, bad_part: str) -> None:
        with pytest.raises(tg.InvalidDefinitionError, match=exact(f"invalid part {bad_part}")):
            tg.AssetKey(path)  # type: ignore[arg-type]

    def test_empty_path_is_rejected(self) -> None:
        with pytest.raises(tg.InvalidDefinitionError, match="the path is empty"):
            tg.AssetKey([])

    def test_names_may_hold_digits_dashes_and_underscores(self) -> None:
        assert tg.AssetKey(["_private", "orders-2024_eu"]).path == ("_private", "orders-2024_eu")

    def test_empty_part_in_user_string_is_rejected(self) -> None:
        with pytest.raises(tg.InvalidDefinitionError, match=exact("invalid part ''")):
            tg.AssetKey.from_user_string("sales//orders")

    def test_equality_and_hash_follow_the_path(self) -> None:
        assert tg.AssetKey("orders") == tg.AssetKey(["orders"])
        assert tg.AssetKey(("a", "b")) == tg.AssetKey.from_user_string("a/b")
        assert tg.AssetKey(["a", "b"]) != tg.AssetKey(["b", "a"])
        assert tg.AssetKey("orders") != "orders"
        assert len({tg.AssetKey("a"), tg.AssetKey(["a"]), tg.AssetKey.from_user_string("a")}) == 1
        assert {tg.AssetKey(["x", "y"]): 1}[tg.AssetKey.from_user_string("x/y")] == 1

    def test_ordering_is_by_path(self) -> None:
        keys = [tg.AssetKey("b"), tg.AssetKey(["a", "z"]), tg.AssetKey("a"), tg.AssetKey(["a", "b"])]
        assert [str(k) for k in sorted(keys)] == ["a", "a/b", "a/z", "b"]
        assert tg.AssetKey("a") < tg.AssetKey("b")
        assert tg.AssetKey("b") > tg.AssetKey("a")
        assert not tg.AssetKey("a") < tg.AssetKey("a")
        assert min(keys) == tg.AssetKey("a")
        assert max(keys) == tg.AssetKey("b")

    def test_non_strict_comparisons(self) -> None:
        assert tg.AssetKey("a") <= tg.AssetKey("a")
        assert tg.AssetKey("a") <= tg.AssetKey("b")
        assert tg.AssetKey("b") >= tg.AssetKey("a")
        assert not tg.AssetKey("b") <= tg.AssetKey("a")

    def test_comparing_with_another_type_is_a_type_error(self) -> None:
        with pytest.raises(TypeError):
            _ = tg.AssetKey("a") < "b"  # type: ignore[operator]

    def test_is_immutable(self) -> None:
        key = tg.AssetKey("orders")
        with pytest.raises(AttributeError, match="immutable"):
            key.path = ("other",)  # type: ignore[misc]
        assert key.path == ("orders",)

    def test_survives_copy_and_pickle(self) -> None:
        key = tg.AssetKey(["sales", "orders"])
        for clone in (copy.copy(key), copy.deepcopy(key), pickle.loads(pickle.dumps(key))):
            assert clone == key
            assert clone.path == ("sales", "orders")
            assert hash(clone) == hash(key)

    def test_equal_keys_are_one_object_hashed_by_identity(self) -> None:
        """Keys are interned (their hash is the C identity hash): however a key is made, an
        equal key is the same object, also when threads make it at once."""
        key = tg.AssetKey(["sales", "orders"])
        made = [
            tg.AssetKey(("sales", "orders")),
            tg.AssetKey.from_user_string("sales/orders"),
            tg.AssetKey("orders").with_prefix("sales"),
            copy.deepcopy(key),
            pickle.loads(pickle.dumps(key)),
        ]
        assert all(other is key and hash(other) == hash(key) for other in made)
        assert len({key, *made}) == 1

        name = f"fresh_{random.getrandbits(64)}"
        start = threading.Barrier(8)

        def make() -> tg.AssetKey:
            start.wait()
            return tg.AssetKey(["threads", name])

        with ThreadPoolExecutor(8) as pool:
            keys = list(pool.map(lambda _: make(), range(8)))
        assert all(other is keys[0] for other in keys)

    def test_an_unused_key_is_freed(self) -> None:
        ref = weakref.ref(tg.AssetKey(f"gone_{random.getrandbits(64)}"))
        gc.collect()
        assert ref() is None

    def test_with_prefix(self) -> None:
        assert tg.AssetKey("orders").with_prefix("sales") == tg.AssetKey(["sales", "orders"])
        assert tg.AssetKey("orders").with_prefix(["a", "b"]) == tg.AssetKey(["a", "b", "orders"])

    def test_from_coercible(self) -> None:
        @tg.asset(key_prefix="sales")
        def orders() -> int:
            return 1

        key = tg.AssetKey(["sales", "orders"])
        assert tg.AssetKey.from_coercible(key) is key
        assert tg.AssetKey.from_coercible("sales/orders") == key
        assert tg.AssetKey.from_coercible(["sales", "orders"]) == key
        assert tg.AssetKey.from_coercible(orders) == key


# -- RetryPolicy --------------------------------------------------------------------------------


class TestRetryPolicy:
    def test_defaults(self) -> None:
        policy = tg.RetryPolicy()
        assert policy.max_retries == 1
        assert policy.delay is None
        assert policy.delay_before(1) == 0.0

    @pytest.mark.parametrize("bad", [-1, 1.5, "3", None])
    def test_max_retries_must_be_a_non_negative_integer(self, bad: object) -> None:
        with pytest.raises(tg.InvalidDefinitionError, match=exact(f"max_retries must be an integer >= 0, got {bad!r}")):
            tg.RetryPolicy(max_retries=bad)  # type: ignore[arg-type]

    def test_zero_retries_is_allowed(self) -> None:
        assert tg.RetryPolicy(max_retries=0).max_retries == 0

    def test_delay_must_not_be_negative(self) -> None:
        with pytest.raises(tg.InvalidDefinitionError, match=exact("delay must be >= 0, got -0.5")):
            tg.RetryPolicy(delay=-0.5)

    def test_backoff_needs_a_delay(self) -> None:
        with pytest.raises(tg.InvalidDefinitionError, match="backoff needs a delay"):
            tg.RetryPolicy(max_retries=3, backoff=tg.Backoff.LINEAR)

    def test_constant_delay_without_backoff(self) -> None:
        policy = tg.RetryPolicy(max_retries=5, delay=2.5)
        assert [policy.delay_before(n) for n in (1, 2, 3)] == [2.5, 2.5, 2.5]

    def test_linear_backoff(self) -> None:
        policy = tg.RetryPolicy(max_retries=5, delay=2, backoff=tg.Backoff.LINEAR)
        assert [policy.delay_before(n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 6.0, 8.0]

    def test_exponential_backoff(self) -> None:
        policy = tg.RetryPolicy(max_retries=5, delay=1.5, backoff=tg.Backoff.EXPONENTIAL)
        assert [policy.delay_before(n) for n in (1, 2, 3, 4, 5)] == [1.5, 3.0, 6.0, 12.0, 24.0]

    def test_full_jitter_draws_from_the_given_rng(self) -> None:
        policy = tg.RetryPolicy(max_retries=3, delay=10, jitter=tg.Jitter.FULL)
        expected = 10 * random.Random(42).random()
        assert policy.delay_before(1, random.Random(42)) == pytest.approx(expected)

    def test_plus_minus_jitter_draws_from_the_given_rng(self) -> None:
        policy = tg.RetryPolicy(max_retries=3, delay=10, backoff=tg.Backoff.LINEAR, jitter=tg.Jitter.PLUS_MINUS)
        draw = random.Random(7).random()
        assert policy.delay_before(2, random.Random(7)) == pytest.approx(20 + 20 * (2 * draw - 1))

    def test_jitter_spreads_the_delays(self) -> None:
        policy = tg.RetryPolicy(max_retries=3, delay=10, jitter=tg.Jitter.FULL)
        rng = random.Random(1)
        delays = {policy.delay_before(1, rng) for _ in range(20)}
        assert len(delays) == 20

    @settings(database=None, deadline=None, max_examples=200)
    @given(
        delay=st.floats(min_value=0, max_value=3600, allow_nan=False),
        retry_number=st.integers(min_value=1, max_value=12),
        backoff=st.sampled_from([None, tg.Backoff.LINEAR, tg.Backoff.EXPONENTIAL]),
        jitter=st.sampled_from([tg.Jitter.FULL, tg.Jitter.PLUS_MINUS]),
        seed=st.integers(min_value=0, max_value=2**32),
    )
    def test_jitter_stays_within_its_bounds(
        self, delay: float, retry_number: int, backoff: tg.Backoff | None, jitter: tg.Jitter, seed: int
    ) -> None:
        policy = tg.RetryPolicy(max_retries=20, delay=delay, backoff=backoff, jitter=jitter)
        base = tg.RetryPolicy(max_retries=20, delay=delay, backoff=backoff).delay_before(retry_number)
        if backoff is tg.Backoff.LINEAR:
            assert base == pytest.approx(delay * retry_number)
        elif backoff is tg.Backoff.EXPONENTIAL:
            assert base == pytest.approx(delay * 2 ** (retry_number - 1))
        else:
            assert base == delay
        value = policy.delay_before(retry_number, random.Random(seed))
        upper = base if jitter is tg.Jitter.FULL else 2 * base
        assert 0.0 <= value <= upper


# -- @asset -------------------------------------------------------------------------------------


class TestAssetDecorator:
    def test_bare_decorator_uses_the_function_and_defaults(self) -> None:
        @tg.asset
        def raw_orders() -> list[int]:
            """Orders as exported.

            One row per order.
            """
            return [1, 2]

        assert isinstance(raw_orders, tg.AssetsDefinition)
        assert raw_orders.key == tg.AssetKey("raw_orders")
        assert raw_orders.name == "raw_orders"
        assert raw_orders.description == "Orders as exported.\n\nOne row per order."
        assert raw_orders.group_name == DEFAULT_GROUP
        assert raw_orders.queue == DEFAULT_QUEUE
        assert raw_orders.io_manager_key == DEFAULT_IO_MANAGER_KEY
        assert raw_orders.tags == {}
        assert raw_orders.metadata == {}
        assert raw_orders.retry_policy is None
        assert raw_orders.inputs == {}
        assert raw_orders.deps == ()
        assert raw_orders.context_param is None
        assert raw_orders() == [1, 2]  # still callable as a plain function

    def test_no_docstring_means_no_description(self) -> None:
        @tg.asset()
        def quiet() -> int:
            return 1

        assert quiet.description is None

    def test_explicit_description_wins_over_docstring(self) -> None:
        @tg.asset(description="From the argument")
        def documented() -> int:
            """From the docstring."""
            return 1

        assert documented.description == "From the argument"

    def test_name(self) -> None:
        @tg.asset(name="orders")
        def compute_orders() -> int:
            return 1

        assert compute_orders.key == tg.AssetKey("orders")

    @pytest.mark.parametrize(
        "key", ["sales/orders", ["sales", "orders"], ("sales", "orders"), tg.AssetKey(["sales", "orders"])]
    )
    def test_key(self, key: object) -> None:
        @tg.asset(key=key)  # type: ignore[arg-type]
        def compute() -> int:
            return 1

        assert compute.key == tg.AssetKey(["sales", "orders"])
        assert compute.name == "orders"

    def test_key_prefix(self) -> None:
        @tg.asset(key_prefix="sales")
        def orders() -> int:
            return 1

        @tg.asset(key_prefix=["warehouse", "eu"], name="totals")
        def compute_totals() -> int:
            return 1

        assert orders.key == tg.AssetKey(["sales", "orders"])
        assert compute_totals.key == tg.AssetKey(["warehouse", "eu", "totals"])

    @pytest.mark.parametrize("extra", [{"name": "orders"}, {"key_prefix": "sales"}])
    def test_key_excludes_name_and_key_prefix(self, extra: dict[str, str]) -> None:
        def compute() -> int:
            return 1

        with pytest.raises(tg.InvalidDefinitionError, match="give either key= or name=/key_prefix=, not both"):
            tg.asset(key="sales/orders", **extra)(compute)  # type: ignore[call-overload]

    def test_invalid_name_is_rejected_and_named(self) -> None:
        def compute() -> int:
            return 1

        with pytest.raises(tg.InvalidDefinitionError, match=exact("asset 'raw orders': AssetKey ['raw orders']")):
            tg.asset(name="raw orders")(compute)

    def test_invalid_key_prefix_is_rejected_and_named(self) -> None:
        def orders() -> int:
            return 1

        with pytest.raises(tg.InvalidDefinitionError, match=exact("asset 'orders':")) as info:
            tg.asset(key_prefix="bad prefix")(orders)
        assert "invalid part 'bad prefix'" in str(info.value)

    def test_deps_accept_assets_keys_and_strings(self) -> None:
        @tg.asset
        def upstream_one() -> int:
            return 1

        @tg.asset(deps=[upstream_one, "sales/orders", tg.AssetKey("ledger"), ["x", "y"]])
        def report() -> None:
            return None

        assert report.deps == (
            tg.AssetKey("upstream_one"),
            tg.AssetKey(["sales", "orders"]),
            tg.AssetKey("ledger"),
            tg.AssetKey(["x", "y"]),
        )
        assert report.inputs == {}  # deps are ordered after, never loaded
        assert report.upstream_keys == report.deps

    @pytest.mark.parametrize("bad", [None, "bad key", 42])
    def test_invalid_deps_entry_is_rejected_and_named(self, bad: object) -> None:
        def report() -> None:
            return None

        with pytest.raises(tg.InvalidDefinitionError, match=exact(f"asset 'report': invalid entry in deps: {bad!r}")):
            tg.asset(deps=[bad])(report)  # type: ignore[list-item]

    def test_ins_maps_a_parameter_to_another_key(self) -> None:
        @tg.asset(ins={"orders": tg.AssetIn("sales/orders"), "ledger": tg.AssetIn(["finance", "ledger"])})
        def report(orders: list[int], ledger: dict[str, int], customers: list[str]) -> int:
            return 1

        assert report.inputs == {
            "orders": tg.AssetKey(["sales", "orders"]),
            "ledger": tg.AssetKey(["finance", "ledger"]),
        }
        assert report.ambiguous_params == ("customers",)

    def test_ins_accepts_a_plain_key(self) -> None:
        @tg.asset(ins={"orders": "sales/orders"})
        def report(orders: list[int]) -> int:
            return 1

        assert report.inputs == {"orders": tg.AssetKey(["sales", "orders"])}

    def test_ins_must_name_a_parameter(self) -> None:
        def report(orders: list[int]) -> int:
            return 1

        with pytest.raises(tg.InvalidDefinitionError, match=exact("asset 'report': ins names 'order'")):
            tg.asset(ins={"order": tg.AssetIn("orders")})(report)

    @pytest.mark.parametrize("target", [tg.AssetIn("bad key"), tg.AssetIn(42), "a//b"])  # type: ignore[arg-type]
    def test_invalid_ins_key_is_rejected_and_names_the_asset(self, target: object) -> None:
        def report(orders: list[int]) -> int:
            return 1

        with pytest.raises(tg.InvalidDefinitionError, match=exact("asset 'report': ")) as info:
            tg.asset(ins={"orders": target})(report)  # type: ignore[dict-item]
        assert "'orders'" in str(info.value)

    def test_group_name(self) -> None:
        @tg.asset(group_name="sales")
        def orders() -> int:
            return 1

        assert orders.group_name == "sales"

    @pytest.mark.parametrize("bad", ["sales,eu", "sales team", "", "group:x"])
    def test_invalid_group_name_is_rejected_and_named(self, bad: str) -> None:
        def orders() -> int:
            return 1

        with pytest.raises(tg.InvalidDefinitionError, match=exact(f"asset 'orders': invalid group name {bad!r}")):
            tg.asset(group_name=bad)(orders)

    def test_tags_and_metadata_are_copied(self) -> None:
        tags = {"team": "finance"}
        metadata = {"owner": "ana", "rows": 3}

        @tg.asset(tags=tags, metadata=metadata)
        def orders() -> int:
            return 1

        tags["team"] = "changed"
        metadata["rows"] = 4
        assert orders.tags == {"team": "finance"}
        assert orders.metadata == {"owner": "ana", "rows": 3}

    @pytest.mark.parametrize(("tags", "shown"), [({"team": 1}, "'team': 1"), ({2: "x"}, "2: 'x'")])
    def test_non_string_tags_are_rejected_and_named(self, tags: dict[object, object], shown: str) -> None:
        def orders() -> int:
            return 1

        with pytest.raises(
            tg.InvalidDefinitionError, match=exact(f"asset 'orders': tags must map str to str, got {shown}")
        ):
            tg.asset(tags=tags)(orders)  # type: ignore[arg-type]

    def test_retry_policy(self) -> None:
        policy = tg.RetryPolicy(max_retries=3, delay=1)

        @tg.asset(retry_policy=policy)
        def flaky() -> int:
            return 1

        assert flaky.retry_policy is policy

    def test_retry_policy_must_be_a_retry_policy(self) -> None:
        def flaky() -> int:
            return 1

        with pytest.raises(
            tg.InvalidDefinitionError, match=exact("asset 'flaky': retry_policy must be a RetryPolicy, got 3")
        ):
            tg.asset(retry_policy=3)(flaky)  # type: ignore[arg-type]

    @pytest.mark.parametrize("queue", ["etl", "etl.high-priority_2", "GPU"])
    def test_queue(self, queue: str) -> None:
        @tg.asset(queue=queue)
        def heavy() -> int:
            return 1

        assert heavy.queue == queue

    @pytest.mark.parametrize("bad", ["bad queue", "etl/high", "", "q:1"])
    def test_invalid_queue_is_rejected_and_named(self, bad: str) -> None:
        def heavy() -> int:
            return 1

        with pytest.raises(tg.InvalidDefinitionError, match=exact(f"asset 'heavy': invalid queue name {bad!r}")):
            tg.asset(queue=bad)(heavy)

    def test_io_manager_key(self) -> None:
        @tg.asset(io_manager_key="s3_io")
        def big() -> int:
            return 1

        assert big.io_manager_key == "s3_io"

    def test_context_by_name(self) -> None:
        @tg.asset
        def orders(context, raw):  # type: ignore[no-untyped-def]
            return raw

        assert orders.context_param == "context"
        assert orders.ambiguous_params == ("raw",)

    def test_context_by_annotation(self) -> None:
        @tg.asset
        def orders(raw: list[int], ctx: tg.AssetExecutionContext) -> list[int]:
            return raw

        assert orders.context_param == "ctx"
        assert orders.ambiguous_params == ("raw",)

    def test_context_by_subclass_annotation(self) -> None:
        @tg.asset
        def orders(traced: TracedContext) -> int:
            return 1

        assert orders.context_param == "traced"
        assert orders.ambiguous_params == ()

    def test_context_by_annotation_survives_an_unresolvable_annotation(self) -> None:
        @tg.asset
        def totals(ctx: tg.AssetExecutionContext, amounts: "decimal.Decimal") -> int:
            return 1

        assert totals.context_param == "ctx"
        assert totals.ambiguous_params == ("amounts",)

    def test_two_context_parameters_are_rejected(self) -> None:
        def orders(context: tg.AssetExecutionContext, ctx: tg.AssetExecutionContext) -> int:
            return 1

        with pytest.raises(tg.InvalidDefinitionError, match=exact("asset 'orders': two context parameters")):
            tg.asset(orders)

    def test_variadic_parameters_are_rejected(self) -> None:
        def orders(*rows: int) -> int:
            return 1

        def refunds(**rows: int) -> int:
            return 1

        with pytest.raises(
            tg.InvalidDefinitionError, match=exact("asset 'orders': *args and **kwargs are not supported")
        ):
            tg.asset(orders)
        with pytest.raises(
            tg.InvalidDefinitionError, match=exact("asset 'refunds': *args and **kwargs are not supported")
        ):
            tg.asset(refunds)

    def test_resource_by_annotation_is_known_at_decoration(self) -> None:
        @tg.asset
        def orders(warehouse: Warehouse, raw: list[int]) -> int:
            return 1

        assert orders.resource_params == frozenset({"warehouse"})
        assert orders.ambiguous_params == ("raw",)

    def test_required_resource_keys(self) -> None:
        @tg.asset(required_resource_keys={"db", "api"})
        def orders(db: object, raw: list[int]) -> int:
            return 1

        # "api" is not a parameter: it is still required, for context.resources.api, but it
        # must not be passed to the function as a keyword argument
        assert orders.resource_params == frozenset({"db"})
        assert orders.context_resource_keys == frozenset({"api"})
        assert orders.required_resource_keys == frozenset({"db", "api"})
        assert orders.ambiguous_params == ("raw",)

    def test_resource_by_parameter_name_is_resolved_by_definitions(self) -> None:
        @tg.asset
        def raw() -> list[int]:
            return [1]

        @tg.asset
        def orders(raw: list[int], warehouse: object) -> int:
            return 1

        defs = tg.Definitions(assets=[raw, orders], resources={"warehouse": object()})
        resolved = defs.get_asset("orders")
        assert resolved.resource_params == frozenset({"warehouse"})
        assert resolved.inputs == {"raw": tg.AssetKey("raw")}
        assert resolved.ambiguous_params == ()
        assert defs.graph.upstream[tg.AssetKey("orders")] == frozenset({tg.AssetKey("raw")})

    def test_non_callable_is_rejected(self) -> None:
        with pytest.raises(tg.InvalidDefinitionError, match="@asset decorates a function, got 3"):
            tg.asset(3)  # type: ignore[call-overload]


class TestConfigurableResource:
    def test_is_a_keyword_only_dataclass(self) -> None:
        warehouse = Warehouse(dsn="postgresql://u:secret@h/db")
        assert warehouse.dsn == "postgresql://u:secret@h/db"
        assert warehouse.timeout == 30.0
        with pytest.raises(TypeError):
            Warehouse("postgresql://h/db")  # type: ignore[misc]

    def test_repr_hides_values(self) -> None:
        text = repr(Warehouse(dsn="postgresql://u:secret@h/db"))
        assert text == "Warehouse(dsn, timeout)"
        assert "secret" not in text


# -- Definitions validation ---------------------------------------------------------------------


def _source() -> int:
    return 1


class TestDefinitionsValidation:
    def test_valid_definitions(self) -> None:
        @tg.asset
        def raw() -> int:
            return 1

        @tg.asset
        def cleaned(raw: int) -> int:
            return raw

        defs = tg.Definitions(assets=[raw, cleaned])
        assert set(defs.assets) == {tg.AssetKey("raw"), tg.AssetKey("cleaned")}
        assert defs.get_asset("cleaned").inputs == {"raw": tg.AssetKey("raw")}
        assert defs.graph.downstream[tg.AssetKey("raw")] == frozenset({tg.AssetKey("cleaned")})
        assert defs.get_job(IMPLICIT_ASSET_JOB).asset_keys == (tg.AssetKey("raw"), tg.AssetKey("cleaned"))

    def test_empty_definitions(self) -> None:
        defs = tg.Definitions()
        assert dict(defs.assets) == {}
        assert list(defs.jobs) == [IMPLICIT_ASSET_JOB]  # the ad-hoc asset job exists, empty, for target="*"
        assert defs.plan(IMPLICIT_ASSET_JOB).steps == ()

    def test_assets_must_be_asset_definitions(self) -> None:
        with pytest.raises(tg.InvalidDefinitionError, match="assets= holds <function _source"):
            tg.Definitions(assets=[_source])  # type: ignore[list-item]

    def test_duplicate_asset_key(self) -> None:
        first = tg.asset(name="orders")(_source)

        def other() -> int:
            return 2

        second = tg.asset(name="orders")(other)
        with pytest.raises(tg.DuplicateDefinitionError, match=exact("asset 'orders': defined twice (")) as info:
            tg.Definitions(assets=[first, second])
        # both places are named, so the user can find them
        assert str(info.value).count("test_definitions.py:") == 2

    def test_duplicate_prefixed_key(self) -> None:
        first = tg.asset(key="sales/orders")(_source)
        second = tg.asset(key_prefix="sales", name="orders")(_source)
        with pytest.raises(tg.DuplicateDefinitionError, match=exact("asset 'sales/orders': defined twice")):
            tg.Definitions(assets=[first, second])

    def test_unknown_dependency_by_parameter_name(self) -> None:
        @tg.asset
        def raw() -> int:
            return 1

        @tg.asset
        def report(raw: int, cleaned: int) -> int:
            return raw + cleaned

        with pytest.raises(
            tg.UnknownDependencyError, match=exact("asset 'report': unknown dependency 'cleaned' (no asset or resource")
        ) as info:
            tg.Definitions(assets=[raw, report])
        assert "assets: raw, report" in str(info.value)

    def test_undefined_deps_key_becomes_an_external_asset(self) -> None:
        # As in Dagster: a deps= key nothing defines (typo or not) is an external asset, not an error.
        @tg.asset(deps=["sales/orders"])
        def report() -> None:
            return None

        defs = tg.Definitions(assets=[report])
        orders = defs.get_asset("sales/orders")
        assert orders.is_external
        assert defs.graph.upstream[report.key] == {orders.key}
        assert [s.step_key for s in defs.plan("__ASSET_JOB").steps] == ["report"]

    def test_unknown_dependency_by_ins(self) -> None:
        @tg.asset(ins={"orders": tg.AssetIn("raw_orders")})
        def report(orders: int) -> int:
            return orders

        with pytest.raises(tg.UnknownDependencyError, match=exact("asset 'report': unknown dependency 'raw_orders'")):
            tg.Definitions(assets=[report])

    def test_dependency_cycle(self) -> None:
        @tg.asset(deps=["c"])
        def a() -> None:
            return None

        @tg.asset(deps=["a"])
        def b() -> None:
            return None

        @tg.asset
        def c(b: int) -> None:
            return None

        for order in ([a, b, c], [c, b, a], [b, c, a]):
            with pytest.raises(tg.DependencyCycleError) as info:
                tg.Definitions(assets=order)
            assert info.value.cycle == ["a", "b", "c", "a"]
            assert str(info.value) == "asset 'a': dependency cycle a -> b -> c -> a"
            assert isinstance(info.value, tg.DefinitionError)

    def test_dependency_cycle_is_found_among_acyclic_assets(self) -> None:
        @tg.asset
        def root() -> int:
            return 1

        @tg.asset
        def x(root: int, z: int) -> int:
            return 1

        @tg.asset
        def y(x: int) -> int:
            return 1

        @tg.asset
        def z(y: int) -> int:
            return 1

        @tg.asset
        def aa_tail(z: int) -> int:  # sorts first, downstream of the cycle
            return 1

        with pytest.raises(tg.DependencyCycleError) as info:
            tg.Definitions(assets=[root, x, y, z, aa_tail])
        assert info.value.cycle == ["x", "y", "z", "x"]
        assert "dependency cycle x -> y -> z -> x" in str(info.value)

    def test_self_dependency_is_a_cycle(self) -> None:
        @tg.asset
        def loop(loop: int) -> int:
            return loop

        with pytest.raises(tg.DependencyCycleError, match=exact("asset 'loop': dependency cycle loop -> loop")) as info:
            tg.Definitions(assets=[loop])
        assert info.value.cycle == ["loop", "loop"]

    def test_job_selecting_nothing(self) -> None:
        job = tg.define_asset_job("nothing", "group:marketing")
        with pytest.raises(
            tg.EmptySelectionError, match=exact("job 'nothing': selection 'group:marketing' matches no asset")
        ):
            tg.Definitions(assets=[tg.asset(name="orders")(_source)], jobs=[job])

    def test_job_selecting_nothing_by_object(self) -> None:
        job = tg.define_asset_job("finance", tg.AssetSelection.tag("team", "finance"))
        with pytest.raises(tg.EmptySelectionError, match=exact("job 'finance': selection ")):
            tg.Definitions(assets=[tg.asset(name="orders")(_source)], jobs=[job])

    def test_job_selecting_an_unknown_key(self) -> None:
        job = tg.define_asset_job("daily", "orders, refunds")
        with pytest.raises(
            tg.InvalidSelectionError, match=exact("job 'daily': selection names unknown asset(s): refunds")
        ):
            tg.Definitions(assets=[tg.asset(name="orders")(_source)], jobs=[job])

    def test_missing_required_resource_key(self) -> None:
        @tg.asset(required_resource_keys={"db"})
        def orders(context: tg.AssetExecutionContext) -> int:
            return 1

        with pytest.raises(
            tg.MissingResourceError,
            match=exact("asset 'orders': missing resource 'db' (Definitions(resources=...) has: none)"),
        ):
            tg.Definitions(assets=[orders])
        with pytest.raises(tg.MissingResourceError, match=exact("has: ['api']")):
            tg.Definitions(assets=[orders], resources={"api": object()})
        assert tg.Definitions(assets=[orders], resources={"db": object()}).get_asset("orders") is not None

    def test_missing_resource_annotated_with_a_configurable_resource(self) -> None:
        @tg.asset
        def orders(warehouse: Warehouse) -> int:
            return 1

        with pytest.raises(tg.MissingResourceError, match=exact("asset 'orders': missing resource 'warehouse'")):
            tg.Definitions(assets=[orders])
        defs = tg.Definitions(assets=[orders], resources={"warehouse": Warehouse(dsn="x")})
        assert defs.get_asset("orders").resource_params == frozenset({"warehouse"})

    def test_missing_io_manager(self) -> None:
        @tg.asset(io_manager_key="s3_io")
        def big() -> int:
            return 1

        with pytest.raises(
            tg.MissingResourceError, match=exact("asset 'big': missing resource 's3_io' named by io_manager_key")
        ):
            tg.Definitions(assets=[big])
        assert tg.Definitions(assets=[big], resources={"s3_io": tg.InMemoryIOManager()}).get_asset("big")

    def test_default_io_manager_needs_no_resource(self) -> None:
        defs = tg.Definitions(assets=[tg.asset(name="orders")(_source)])
        assert defs.get_asset("orders").io_manager_key == DEFAULT_IO_MANAGER_KEY

    def test_parameter_naming_both_a_resource_and_an_asset(self) -> None:
        @tg.asset
        def warehouse() -> int:
            return 1

        @tg.asset
        def report(warehouse: object) -> int:
            return 1

        with pytest.raises(
            tg.InvalidDefinitionError,
            match=exact("asset 'report': parameter 'warehouse' names both a resource and an asset"),
        ):
            tg.Definitions(assets=[warehouse, report], resources={"warehouse": object()})

    def test_ins_disambiguates_a_parameter(self) -> None:
        @tg.asset
        def warehouse() -> int:
            return 1

        @tg.asset(ins={"warehouse": tg.AssetIn("warehouse")})
        def report(warehouse: int) -> int:
            return 1

        defs = tg.Definitions(assets=[warehouse, report], resources={"warehouse": object()})
        assert defs.get_asset("report").inputs == {"warehouse": tg.AssetKey("warehouse")}
        assert defs.get_asset("report").resource_params == frozenset()

    def test_duplicate_job_names(self) -> None:
        asset = tg.asset(name="orders")(_source)
        jobs = [tg.define_asset_job("daily", "orders"), tg.define_asset_job("daily", "*")]
        with pytest.raises(tg.DuplicateDefinitionError, match=exact("job 'daily': defined twice")):
            tg.Definitions(assets=[asset], jobs=jobs)

    def test_implicit_job_name_is_taken(self) -> None:
        asset = tg.asset(name="orders")(_source)
        with pytest.raises(tg.DuplicateDefinitionError, match=exact(f"job '{IMPLICIT_ASSET_JOB}'")):
            tg.Definitions(assets=[asset], jobs=[tg.define_asset_job(IMPLICIT_ASSET_JOB)])

    def test_jobs_must_come_from_define_asset_job(self) -> None:
        with pytest.raises(tg.InvalidDefinitionError, match="jobs= holds 'daily', not define_asset_job"):
            tg.Definitions(jobs=["daily"])  # type: ignore[list-item]

    def test_duplicate_schedule_and_sensor_names(self) -> None:
        job = tg.define_asset_job("orders_job")
        asset = tg.asset(name="orders")(_source)
        first = tg.ScheduleDefinition(name="hourly", cron_schedule="0 * * * *", target=job)
        second = tg.ScheduleDefinition(name="hourly", cron_schedule="30 * * * *", target=job)
        with pytest.raises(tg.DuplicateDefinitionError, match=exact("schedule 'hourly': defined twice")):
            tg.Definitions(assets=[asset], schedules=[first, second])
        one = tg.sensor(target=job, name="hourly")(lambda context: None)
        two = tg.sensor(target=job, name="hourly")(lambda context: None)
        with pytest.raises(tg.DuplicateDefinitionError, match=exact("sensor 'hourly': defined twice")):
            tg.Definitions(assets=[asset], sensors=[one, two])
        with pytest.raises(tg.InvalidDefinitionError, match="not a SensorDefinition"):
            tg.Definitions(sensors=[object()])

    def test_get_asset_and_get_job_name_what_is_missing(self) -> None:
        defs = tg.Definitions(
            assets=[tg.asset(name="orders")(_source)],
            jobs=[tg.define_asset_job("b_job"), tg.define_asset_job("a_job")],
        )
        with pytest.raises(tg.DefinitionError, match=exact("asset 'sales/refunds': not defined in the loaded code")):
            defs.get_asset("sales/refunds")
        with pytest.raises(
            tg.UnknownJobError, match=exact("job 'weekly': not defined in the loaded code (jobs: a_job, b_job)")
        ):
            defs.get_job("weekly")
        with pytest.raises(tg.UnknownJobError, match=exact("(jobs: none)")):
            tg.Definitions(assets=[tg.asset(name="orders")(_source)]).get_job("weekly")


# -- jobs and plans -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def diamond() -> tg.Definitions:
    """raw -> cleaned -> (by_region, by_day) -> report, and an unrelated ``audit``."""

    @tg.asset(group_name="ingest")
    def raw() -> list[int]:
        return [1, 2, 3]

    @tg.asset(group_name="sales", queue="cpu")
    def cleaned(raw: list[int]) -> list[int]:
        return raw

    @tg.asset(group_name="sales")
    def by_region(cleaned: list[int]) -> int:
        return 1

    @tg.asset(group_name="sales")
    def by_day(cleaned: list[int]) -> int:
        return 1

    @tg.asset(deps=[by_region, by_day], group_name="reporting")
    def report() -> None:
        return None

    @tg.asset
    def audit() -> int:
        return 0

    jobs = [
        tg.define_asset_job("everything", tags={"team": "data"}, description="all of it"),
        tg.define_asset_job("downstream_of_cleaned", "cleaned*"),
        tg.define_asset_job("sales", tg.AssetSelection.groups("sales")),
    ]
    # deliberately not in dependency order
    return tg.Definitions(assets=[report, by_day, audit, cleaned, by_region, raw], jobs=jobs)


def _assert_topological(plan: object) -> None:
    steps = plan.steps  # type: ignore[attr-defined]
    position = {s.step_key: i for i, s in enumerate(steps)}
    for step in steps:
        for up in step.upstream:
            assert position[up] < position[step.step_key]
        for down in step.downstream:
            assert position[down] > position[step.step_key]


class TestJobsAndPlans:
    def test_define_asset_job(self) -> None:
        job = tg.define_asset_job("daily", "raw+", tags={"team": "data"}, description="Every day")
        assert job.name == "daily"
        assert job.tags == {"team": "data"}
        assert job.description == "Every day"
        assert job.selection_text == "'raw+'"

    @pytest.mark.parametrize("bad", ["", "daily job", "1daily", "a/b"])
    def test_invalid_job_name(self, bad: str) -> None:
        with pytest.raises(tg.InvalidDefinitionError, match=exact(f"job {bad!r}: invalid name")):
            tg.define_asset_job(bad)

    def test_malformed_selection_fails_at_definition(self) -> None:
        with pytest.raises(tg.InvalidSelectionError, match=exact("job 'daily': selection 'raw++x'")):
            tg.define_asset_job("daily", "raw++x")

    def test_job_tags_must_be_strings(self) -> None:
        with pytest.raises(tg.InvalidDefinitionError, match=exact("job 'daily': tags must map str to str, got 'n': 1")):
            tg.define_asset_job("daily", tags={"n": 1})  # type: ignore[dict-item]

    def test_topological_order_breaks_ties_by_key(self, diamond: tg.Definitions) -> None:
        assert [str(k) for k in diamond.graph.order] == ["audit", "raw", "cleaned", "by_day", "by_region", "report"]
        assert [str(k) for k in diamond.get_job("everything").asset_keys] == [
            "audit",
            "raw",
            "cleaned",
            "by_day",
            "by_region",
            "report",
        ]

    def test_plan_of_a_whole_job(self, diamond: tg.Definitions) -> None:
        plan = diamond.plan("everything")
        assert plan.job_name == "everything"
        assert plan.tags == {"team": "data"}
        assert plan.asset_selection is None
        assert [s.step_key for s in plan.steps] == ["audit", "raw", "cleaned", "by_day", "by_region", "report"]
        _assert_topological(plan)
        steps = {s.step_key: s for s in plan.steps}
        assert steps["raw"].upstream == ()
        assert steps["raw"].downstream == ("cleaned",)
        assert steps["cleaned"].upstream == ("raw",)
        assert steps["cleaned"].downstream == ("by_day", "by_region")
        assert steps["cleaned"].queue == "cpu"
        assert steps["raw"].queue == DEFAULT_QUEUE
        assert steps["report"].upstream == ("by_day", "by_region")  # deps count as edges
        assert steps["report"].downstream == ()
        assert steps["audit"].upstream == steps["audit"].downstream == ()
        assert steps["by_day"].asset_key == steps["by_day"].display_name == "by_day"

    def test_edges_stay_within_the_run(self, diamond: tg.Definitions) -> None:
        plan = diamond.plan("downstream_of_cleaned")
        assert [s.step_key for s in plan.steps] == ["cleaned", "by_day", "by_region", "report"]
        steps = {s.step_key: s for s in plan.steps}
        assert steps["cleaned"].upstream == ()  # raw is read as last materialized
        _assert_topological(plan)

        sales = diamond.plan("sales")
        steps = {s.step_key: s for s in sales.steps}
        assert list(steps) == ["cleaned", "by_day", "by_region"]
        assert steps["by_day"].downstream == ()  # report is not in the run
        assert steps["cleaned"].downstream == ("by_day", "by_region")

    def test_plan_of_a_selection_subset(self, diamond: tg.Definitions) -> None:
        plan = diamond.plan("everything", "+by_day")
        assert [s.step_key for s in plan.steps] == ["cleaned", "by_day"]
        assert plan.asset_selection == ("cleaned", "by_day")
        steps = {s.step_key: s for s in plan.steps}
        assert steps["cleaned"].upstream == ()
        assert steps["cleaned"].downstream == ("by_day",)
        assert steps["by_day"].upstream == ("cleaned",)

        by_object = diamond.plan("everything", tg.AssetSelection.keys("report", "raw"))
        assert [s.step_key for s in by_object.steps] == ["raw", "report"]
        assert all(s.upstream == s.downstream == () for s in by_object.steps)

        by_list = diamond.plan("everything", ["audit", diamond.get_asset("raw")])
        assert by_list.asset_selection == ("audit", "raw")

    def test_selection_subset_is_cut_to_the_job(self, diamond: tg.Definitions) -> None:
        plan = diamond.plan("sales", "raw*")
        assert [s.step_key for s in plan.steps] == ["cleaned", "by_day", "by_region"]

    def test_selection_outside_the_job(self, diamond: tg.Definitions) -> None:
        with pytest.raises(tg.EmptySelectionError, match=exact("job 'sales': selection 'audit' matches no asset")):
            diamond.plan("sales", "audit")

    def test_selection_with_unknown_key(self, diamond: tg.Definitions) -> None:
        with pytest.raises(tg.InvalidSelectionError, match=exact("unknown asset(s): refunds")):
            diamond.plan("everything", "raw, refunds")

    def test_plan_of_unknown_job(self, diamond: tg.Definitions) -> None:
        with pytest.raises(tg.UnknownJobError, match=exact("job 'weekly': not defined")):
            diamond.plan("weekly")

    def test_implicit_job_covers_every_asset(self, diamond: tg.Definitions) -> None:
        plan = diamond.plan(IMPLICIT_ASSET_JOB)
        assert {s.step_key for s in plan.steps} == {str(k) for k in diamond.assets}
        _assert_topological(plan)
