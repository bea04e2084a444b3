"""The webserver: REST API, GraphQL and health endpoints over the shared database."""
