from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Load the Celery app so shared tasks sent from the web process use its broker.
        import flowsite.celery_app  # noqa: F401
