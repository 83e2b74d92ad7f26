"""Flows, runs, steps, tasks, artifacts, logs and tags."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Status(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)


class Flow(models.Model):
    name = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The last run number handed out; incremented under a row lock.
    last_run_number = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return self.name


class CodePackage(models.Model):
    """A tar.gz of the flow's directory, stored once per content hash."""

    sha256 = models.CharField(max_length=64, unique=True)
    size = models.BigIntegerField()
    storage_key = models.CharField(max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)


class Run(models.Model):
    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="runs")
    number = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    # The namespace that is the run's identity: user:<login> or production:<id>.
    identity_namespace = models.CharField(max_length=300)
    # The namespace steps see in the client API (run --namespace); None means the
    # identity namespace and '' the global namespace.
    client_namespace = models.CharField(max_length=500, null=True, blank=True)
    triggered_by = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    parameter_specs = models.JSONField(default=list, blank=True)
    graph = models.JSONField(default=dict)
    flow_file = models.CharField(max_length=300, default="flow.py")
    code_package = models.ForeignKey(
        CodePackage, null=True, blank=True, on_delete=models.PROTECT
    )
    origin_run = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="resumes"
    )
    is_resume = models.BooleanField(default=False)
    resume_step = models.CharField(max_length=200, blank=True, default="")
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True, default="")
    deployment = models.ForeignKey(
        "runs.Deployment", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="runs",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["flow", "number"], name="run_number_per_flow")
        ]
        indexes = [
            models.Index(fields=["flow", "-id"], name="run_flow_newest"),
            models.Index(
                fields=["flow", "-id"],
                name="run_flow_newest_ok",
                condition=Q(status="completed"),
            ),
            models.Index(fields=["status"], name="run_active",
                         condition=Q(status__in=["pending", "running"])),
        ]

    def __str__(self) -> str:
        return self.pathspec

    @property
    def pathspec(self) -> str:
        return f"{self.flow.name}/{self.number}"

    @property
    def started_by(self) -> str:
        """Who or what started the run: a login, or the trigger of a production run."""
        if self.user_id:
            return self.user.username
        return self.triggered_by or "unknown"

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @property
    def successful(self) -> bool:
        return self.status == Status.COMPLETED

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        end = self.finished_at
        if end is None:
            from django.utils import timezone

            end = timezone.now()
        return (end - self.started_at).total_seconds()


class RunTag(models.Model):
    """One tag of a run. The run id is copied into the index so tag filters walk
    runs newest first without touching the run table."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tag_rows")
    name = models.CharField(max_length=500)
    system = models.BooleanField(default=False)
    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "name"], name="tag_once_per_run")
        ]
        indexes = [
            models.Index(fields=["name", "-run"], name="tag_name_newest"),
            models.Index(fields=["name", "flow", "-run"], name="tag_name_flow_newest"),
        ]


class TagCount(models.Model):
    """How many runs carry each tag, kept current by the tag services for autocomplete."""

    name = models.CharField(max_length=500, unique=True)
    system = models.BooleanField(default=False)
    count = models.BigIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["-count"], name="tagcount_most_used")]


class TagEvent(models.Model):
    """One tag mutation: who changed which tags of which run, and when."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tag_events")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    actor = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    added = models.JSONField(default=list)
    removed = models.JSONField(default=list)

    class Meta:
        indexes = [models.Index(fields=["run", "-id"], name="tagevent_run_newest")]


class Step(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "name"], name="step_once_per_run")
        ]


class Task(models.Model):
    """One execution unit of a step. Ids are global, as in Flow/1/start/550539."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tasks")
    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="tasks")
    step_name = models.CharField(max_length=200)
    # Unique per run: the step name and its position in enclosing splits, so
    # scheduling the same task twice finds the existing row.
    key = models.CharField(max_length=600)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # Enclosing splits, outermost first: [{"step", "task", "n", "i", "kind"}].
    split_stack = models.JSONField(default=list)
    foreach_index = models.IntegerField(null=True, blank=True)
    input_task_ids = models.JSONField(default=list)
    attempt = models.IntegerField(default=0)
    max_attempts = models.IntegerField(default=1)
    worker_host = models.CharField(max_length=200, blank=True, default="")
    worker_pid = models.IntegerField(null=True, blank=True)
    queue = models.CharField(max_length=100, default="default")
    created_at = models.DateTimeField(auto_now_add=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    current = models.JSONField(default=dict, blank=True)
    foreach_count = models.IntegerField(null=True, blank=True)
    next_steps = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True, default="")
    origin_task = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="clones"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "key"], name="task_key_per_run")
        ]
        indexes = [
            models.Index(fields=["run", "step_name"], name="task_run_step"),
            models.Index(fields=["status", "heartbeat_at"], name="task_active",
                         condition=Q(status__in=["pending", "running"])),
        ]

    @property
    def pathspec(self) -> str:
        return f"{self.run.flow.name}/{self.run.number}/{self.step_name}/{self.id}"

    @property
    def cloned(self) -> bool:
        return self.origin_task_id is not None


class TaskAttempt(models.Model):
    """One try of a task; retries keep earlier attempts readable."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="attempts")
    number = models.IntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    worker_host = models.CharField(max_length=200, blank=True, default="")
    worker_pid = models.IntegerField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["task", "number"], name="attempt_once")
        ]


class LogChunk(models.Model):
    """A batch of log lines of one stream of one attempt, in order of seq."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="log_chunks")
    # Copied from the task so a client can follow every log of a run in one query.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="+")
    attempt = models.IntegerField(default=0)
    stream = models.CharField(max_length=6)  # stdout or stderr
    seq = models.IntegerField()
    text = models.TextField()
    line_count = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["task", "attempt", "stream", "seq"], name="log_chunk_once"
            )
        ]
        indexes = [models.Index(fields=["run", "id"], name="log_chunk_run")]


class ArtifactBlob(models.Model):
    """Pickled bytes in storage, addressed by their SHA-256."""

    sha256 = models.CharField(max_length=64, unique=True)
    size = models.BigIntegerField()
    storage_key = models.CharField(max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)


class Artifact(models.Model):
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="artifacts")
    attempt = models.IntegerField(default=0)
    name = models.CharField(max_length=200)
    blob = models.ForeignKey(ArtifactBlob, on_delete=models.PROTECT)
    type_name = models.CharField(max_length=300, blank=True, default="")
    preview = models.TextField(blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["task", "attempt", "name"], name="artifact_once"
            )
        ]


class Deployment(models.Model):
    """A flow deployed to production: its code, its production namespace and the
    hash of the production token that authorizes changes to it."""

    flow = models.OneToOneField(Flow, on_delete=models.CASCADE, related_name="deployment")
    # Public name of the namespace production runs are tagged with; not a secret.
    namespace = models.CharField(max_length=300, unique=True)
    # SHA-256 of the production token; the token itself is never stored.
    token_hash = models.CharField(max_length=128)
    token_issued_at = models.DateTimeField(null=True, blank=True)
    # How many times the namespace was replaced (--generate-new-token or an admin reset).
    generation = models.IntegerField(default=0)
    deployed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    deployed_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    code_package = models.ForeignKey(CodePackage, on_delete=models.PROTECT)
    graph = models.JSONField(default=dict)
    flow_file = models.CharField(max_length=300, default="flow.py")
    parameter_specs = models.JSONField(default=list, blank=True)
    tags = models.JSONField(default=list, blank=True)
    client_namespace = models.CharField(max_length=500, null=True, blank=True)
    # A five-field cron expression in UTC, or "" for a deployment without a schedule.
    schedule = models.CharField(max_length=100, blank=True, default="")
    paused = models.BooleanField(default=False)
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", null=True, blank=True,
        on_delete=models.SET_NULL, related_name="+",
    )

    def __str__(self) -> str:
        return f"{self.flow.name} ({self.namespace})"


class DeploymentEvent(models.Model):
    """One entry of the deployment audit log. Kept after its deployment is deleted."""

    class Action(models.TextChoices):
        DEPLOY = "deploy"
        REFUSE = "refuse"
        TOKEN_ISSUE = "token_issue"
        NAMESPACE_RESET = "namespace_reset"
        PAUSE = "pause"
        RESUME = "resume"
        TRIGGER = "trigger"
        DELETE = "delete"

    deployment = models.ForeignKey(
        Deployment, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    # Copied so the entry still reads right after the deployment is deleted.
    flow_name = models.CharField(max_length=200)
    namespace = models.CharField(max_length=300, blank=True, default="")
    action = models.CharField(max_length=20, choices=Action.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    actor = models.CharField(max_length=200, blank=True, default="")
    message = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["flow_name", "-id"], name="deployevent_flow_newest"),
        ]
