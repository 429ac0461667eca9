"""What drives updates: Celery tasks and beat schedules that call the push API."""
