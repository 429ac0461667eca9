from django.apps import AppConfig


class TasksConfig(AppConfig):
    """Celery tasks and schedules that push updates."""

    name = "tasks"
    verbose_name = "Push tasks"

    def ready(self) -> None:
        from tasks import signals, system  # noqa: F401 - system registers its dashboard
        from tasks.tasks import CLOCK_TOPIC
        from ws import topics

        signals.connect()
        # The server clock is no secret: every page may show it.
        topics.declare(CLOCK_TOPIC, subscribe=topics.anyone)
