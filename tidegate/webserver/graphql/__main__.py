"""``python -m tidegate.webserver.graphql`` prints the schema (SDL), as checked in at docs/graphql.graphql."""

from tidegate.webserver.graphql.schema import schema

print(schema.as_str())
