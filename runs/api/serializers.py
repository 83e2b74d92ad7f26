"""Input and output serializers of the REST API."""

from __future__ import annotations

from rest_framework import serializers

from runs.models import Artifact, Run, TagEvent, Task


class TagsMixin:
    def _tags(self, run: Run):
        # Three fields read these lists; build them once per run object.
        cached = getattr(run, "_serialized_tags", None)
        if cached is not None:
            return cached
        rows = list(run.tag_rows.all())
        run._serialized_tags = {
            "tags": sorted(row.name for row in rows),
            "system_tags": sorted(row.name for row in rows if row.system),
            "user_tags": sorted(row.name for row in rows if not row.system),
        }
        return run._serialized_tags


class RunSerializer(TagsMixin, serializers.ModelSerializer):
    flow = serializers.CharField(source="flow.name")
    id = serializers.CharField(source="number")
    pathspec = serializers.CharField()
    user = serializers.SerializerMethodField()
    namespace = serializers.CharField(source="identity_namespace")
    tags = serializers.SerializerMethodField()
    system_tags = serializers.SerializerMethodField()
    user_tags = serializers.SerializerMethodField()
    successful = serializers.BooleanField()
    finished = serializers.BooleanField()
    duration_seconds = serializers.FloatField(allow_null=True)
    origin_pathspec = serializers.SerializerMethodField()
    cursor = serializers.CharField(source="pk")

    class Meta:
        model = Run
        fields = [
            "flow", "id", "pathspec", "status", "user", "namespace", "client_namespace",
            "triggered_by", "created_at", "started_at", "finished_at", "duration_seconds",
            "heartbeat_at", "successful", "finished", "parameters", "tags", "system_tags",
            "user_tags", "origin_pathspec", "is_resume", "resume_step", "error", "cursor",
        ]

    def get_user(self, run) -> str | None:
        return run.user.username if run.user_id else None

    def get_tags(self, run) -> list[str]:
        return self._tags(run)["tags"]

    def get_system_tags(self, run) -> list[str]:
        return self._tags(run)["system_tags"]

    def get_user_tags(self, run) -> list[str]:
        return self._tags(run)["user_tags"]

    def get_origin_pathspec(self, run) -> str | None:
        if run.origin_run_id is None:
            return None
        return run.origin_run.pathspec


class RunDetailSerializer(RunSerializer):
    graph = serializers.JSONField()
    parameter_specs = serializers.JSONField()

    class Meta(RunSerializer.Meta):
        fields = RunSerializer.Meta.fields + ["graph", "parameter_specs", "flow_file"]


class StepSerializer(serializers.Serializer):
    name = serializers.CharField()
    status = serializers.CharField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    pathspec = serializers.CharField()
    task_count = serializers.IntegerField()


class TaskSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="pk")
    step = serializers.CharField(source="step_name")
    pathspec = serializers.SerializerMethodField()
    origin_pathspec = serializers.SerializerMethodField()
    successful = serializers.SerializerMethodField()
    finished = serializers.SerializerMethodField()

    class Meta:
        model = Task
        fields = [
            "id", "step", "pathspec", "status", "attempt", "max_attempts", "worker_host",
            "worker_pid", "created_at", "started_at", "finished_at", "heartbeat_at",
            "current", "foreach_index", "foreach_count", "next_steps", "error",
            "origin_pathspec", "successful", "finished", "input_task_ids", "queue",
        ]

    def get_pathspec(self, task) -> str:
        run = task.run
        return f"{run.flow.name}/{run.number}/{task.step_name}/{task.pk}"

    def get_origin_pathspec(self, task) -> str | None:
        origin = task.origin_task
        if origin is None:
            return None
        return f"{origin.run.flow.name}/{origin.run.number}/{origin.step_name}/{origin.pk}"

    def get_successful(self, task) -> bool:
        return task.status == "completed"

    def get_finished(self, task) -> bool:
        return task.status in ("completed", "failed", "cancelled")


class ArtifactSerializer(serializers.ModelSerializer):
    sha256 = serializers.CharField(source="blob.sha256")
    size = serializers.IntegerField(source="blob.size")
    type = serializers.CharField(source="type_name")

    class Meta:
        model = Artifact
        fields = ["name", "attempt", "type", "size", "sha256", "preview"]


class TagEventSerializer(serializers.ModelSerializer):
    user = serializers.SerializerMethodField()

    class Meta:
        model = TagEvent
        fields = ["id", "created_at", "user", "added", "removed"]

    def get_user(self, event) -> str:
        return event.actor or (event.user.username if event.user_id else "")


class TagField(serializers.CharField):
    """A tag, passed through unchanged. The tag service checks every rule (length, NUL,
    surrogates, system prefixes), so the API and the SDK report one message per rule."""

    def __init__(self, **kwargs):
        super().__init__(allow_blank=True, allow_null=True, trim_whitespace=False, **kwargs)
        self.validators = []

    def to_internal_value(self, data):
        return data


class TagMutationSerializer(serializers.Serializer):
    add = serializers.ListField(child=TagField(), required=False, default=list,
                                max_length=1000)
    remove = serializers.ListField(child=TagField(), required=False, default=list,
                                   max_length=1000)


class RunCreateSerializer(serializers.Serializer):
    metadata = serializers.JSONField(help_text="flow, flow_file, parameters, "
                                     "parameter_specs, tags, runtime, python_version, "
                                     "namespace")
    package = serializers.FileField(help_text="The flow's folder as a tar.gz archive.")


class LoginSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=1000, trim_whitespace=False)
    name = serializers.CharField(max_length=100, required=False, default="cli")


class TokenSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)


class TokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)


class LogChunkSerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    text = serializers.CharField()
