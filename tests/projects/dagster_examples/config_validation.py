# Dagster's docs example (guides/operate/configuration/run_config/validation/assets.py); only the import lines
# changed.

# start
import tidegate as dg
from tests.projects.dagster_examples.config_resources import MyAssetConfig


@dg.asset
def greeting(config: MyAssetConfig) -> str:
    return f"hello {config.person_name}"


asset_result = dg.materialize(
    [greeting],
    run_config=dg.RunConfig({"greeting": MyAssetConfig(non_existent_config_value=1)}),
)
# end
