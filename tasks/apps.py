from django.apps import AppConfig


class TasksConfig(AppConfig):
    """Celery tasks and schedules that push updates."""

    name = "tasks"
    verbose_name = "Push tasks"
