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

        try:
            # The ping waits the whole timeout, because the number of workers is unknown.
            # The questions after it name the workers, so they return once all replied.
            names = sorted(name for reply in app.control.ping(timeout=timeout) for name in reply)
            if not names:
                raise CommandError(
                    f"No worker responded within {timeout:g} s. Start one with "
                    "`celery -A flowsite.celery_app worker -Q default`, or raise --timeout."
                )
            inspect = app.control.inspect(destination=names, timeout=timeout, limit=len(names))
            stats = inspect.stats() or {}
            queues = inspect.active_queues() or {}
            active = inspect.active() or {}
        except OSError as exc:
            raise CommandError(
                f"Could not reach the broker ({exc}). Check CELERY_BROKER_URL."
            ) from None

        for name in names:
            pool = stats.get(name, {}).get("pool", {}).get("max-concurrency", "?")
            names = ",".join(sorted(q["name"] for q in queues.get(name, []))) or "-"
            busy = len(active.get(name, []))
            self.stdout.write(f"{name}  queues={names}  pool={pool}  busy={busy}")
        self.stdout.write(f"{len(names)} worker(s) responded.")
