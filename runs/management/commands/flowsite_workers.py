"""List the Celery workers that respond over the broker, with their queues and load."""

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Ask every Celery worker over the broker for its queues, pool size and running "
        "tasks, and print one line per worker. Exits 1 when no worker responds."
    )

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=float, default=2.0,
                            help="Seconds to wait for workers to respond (default 2).")

    def handle(self, *args, timeout: float, **options):
        from flowsite.celery_app import app

        inspect = app.control.inspect(timeout=timeout)
        try:
            stats = inspect.stats() or {}
            queues = inspect.active_queues() or {}
            active = inspect.active() or {}
        except OSError as exc:
            raise CommandError(
                f"Could not reach the broker ({exc}). Check CELERY_BROKER_URL."
            ) from None
        if not stats:
            raise CommandError(
                f"No worker responded within {timeout:g} s. Start one with "
                "`celery -A flowsite.celery_app worker -Q default`, or raise --timeout."
            )

        for name in sorted(stats):
            pool = stats[name].get("pool", {}).get("max-concurrency", "?")
            names = ",".join(sorted(q["name"] for q in queues.get(name, []))) or "-"
            busy = len(active.get(name, []))
            self.stdout.write(f"{name}  queues={names}  pool={pool}  busy={busy}")
        self.stdout.write(f"{len(stats)} worker(s) responded.")
