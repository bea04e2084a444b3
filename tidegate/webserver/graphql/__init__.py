"""Dagster-compatible GraphQL at ``/graphql`` (strawberry): see schema.py and docs/graphql.md."""

from tidegate.webserver.graphql.context import GraphQLContext, Workspace
from tidegate.webserver.graphql.schema import schema

__all__ = ["GraphQLContext", "Workspace", "schema"]
