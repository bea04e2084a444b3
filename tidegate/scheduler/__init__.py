"""The beat: deciding when work runs, starting queued runs, publishing due steps."""
