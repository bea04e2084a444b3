# Dagster's docs examples (guides/operate/configuration/advanced_config_types/pythonic_config.py), the asset
# ones: only the `import dagster as dg` lines changed; the op examples are left out, and each function returns
# its result (`return ...` added) so that the test can look at it.
# ruff: isort: skip_file


def execute_with_config() -> None:
    # start_basic_asset_config

    import tidegate as dg

    class MyAssetConfig(dg.Config):
        person_name: str

    @dg.asset
    def greeting(config: MyAssetConfig) -> str:
        return f"hello {config.person_name}"

    # end_basic_asset_config

    asset_result = dg.materialize(
        [greeting],
        run_config=dg.RunConfig({"greeting": MyAssetConfig(person_name="Alice")}),
    )

    # start_execute_with_config_envvar
    asset_result = dg.materialize(
        [greeting],
        run_config=dg.RunConfig({"greeting": MyAssetConfig(person_name=dg.EnvVar("PERSON_NAME"))}),
    )

    # end_execute_with_config_envvar
    return asset_result


def basic_data_structures_config() -> None:
    # start_basic_data_structures_config
    import tidegate as dg

    class MyDataStructuresConfig(dg.Config):
        user_names: list[str]
        user_scores: dict[str, int]

    @dg.asset
    def scoreboard(config: MyDataStructuresConfig): ...

    result = dg.materialize(
        [scoreboard],
        run_config=dg.RunConfig(
            {
                "scoreboard": MyDataStructuresConfig(
                    user_names=["Alice", "Bob"],
                    user_scores={"Alice": 10, "Bob": 20},
                )
            }
        ),
    )

    # end_basic_data_structures_config
    return result


def union_schema_config() -> None:
    # start_union_schema_config

    import tidegate as dg
    from pydantic import Field
    from typing import Union
    from typing import Literal

    class Cat(dg.Config):
        pet_type: Literal["cat"] = "cat"
        meows: int

    class Dog(dg.Config):
        pet_type: Literal["dog"] = "dog"
        barks: float

    class ConfigWithUnion(dg.Config):
        pet: Union[Cat, Dog] = Field(discriminator="pet_type")

    @dg.asset
    def pet_stats(config: ConfigWithUnion):
        if isinstance(config.pet, Cat):
            return f"Cat meows {config.pet.meows} times"
        else:
            return f"Dog barks {config.pet.barks} times"

    result = dg.materialize(
        [pet_stats],
        run_config=dg.RunConfig(
            {
                "pet_stats": ConfigWithUnion(
                    pet=Cat(meows=10),
                )
            }
        ),
    )
    # end_union_schema_config
    return result


def metadata_config() -> None:
    #  start_metadata_config
    import tidegate as dg
    from pydantic import Field

    class MyMetadataConfig(dg.Config):
        person_name: str = Field(description="The name of the person to greet")
        age: int = Field(gt=0, lt=100, description="The age of the person to greet")

    # errors, since age is not in the valid range!
    MyMetadataConfig(person_name="Alice", age=200)

    # end_metadata_config


def optional_config() -> None:
    # start_optional_config

    import tidegate as dg
    from pydantic import Field

    class MyAssetConfig(dg.Config):
        person_name: str | None = None

        # can pass default to pydantic.Field to attach metadata to the field
        greeting_phrase: str = Field(default="hello", description="The greeting phrase to use.")

    @dg.asset
    def greeting(config: MyAssetConfig) -> str:
        if config.person_name:
            return f"{config.greeting_phrase} {config.person_name}"
        else:
            return config.greeting_phrase

    asset_result = dg.materialize(
        [greeting],
        run_config=dg.RunConfig({"greeting": MyAssetConfig()}),
    )

    # end_optional_config
    return asset_result


def required_config() -> None:
    # start_required_config
    from collections.abc import Callable
    import tidegate as dg
    from pydantic import Field

    class MyAssetConfig(dg.Config):
        # ellipsis indicates that even though the type is Optional,
        # an input is required
        person_first_name: str | None = ...

        # ellipsis can also be used with pydantic.Field to attach metadata
        person_last_name: Callable | None = Field(default=..., description="The last name of the person to greet")

    @dg.asset
    def goodbye(config: MyAssetConfig) -> str:
        full_name = f"{config.person_first_name} {config.person_last_name}".strip()
        if full_name:
            return f"Goodbye, {full_name}"
        else:
            return "Goodbye"

    # errors, since person_first_name and person_last_name are required
    goodbye(MyAssetConfig())

    # works, since both person_first_name and person_last_name are provided
    goodbye(MyAssetConfig(person_first_name="Alice", person_last_name=None))

    # end_required_config
