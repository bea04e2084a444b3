# Dagster's docs example (guides/operate/configuration/run_config/asset_example/resources.py); only the import
# line changed.
import tidegate as dg


class MyAssetConfig(dg.Config):
    person_name: str


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"config": MyAssetConfig(person_name="")})
