"""Execution: the Celery app's tasks, step execution, IO managers."""
