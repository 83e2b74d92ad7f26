from django.contrib import admin

from runs import models


@admin.register(models.Flow)
class FlowAdmin(admin.ModelAdmin):
    list_display = ("name", "created_at", "last_run_number")
    search_fields = ("name",)


class RunTagInline(admin.TabularInline):
    model = models.RunTag
    extra = 0
    fields = ("name", "system")
    readonly_fields = ("system",)


@admin.register(models.Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("__str__", "status", "user", "identity_namespace", "created_at")
    list_filter = ("status",)
    search_fields = ("flow__name", "identity_namespace")
    raw_id_fields = ("flow", "user", "origin_run", "code_package", "deployment")
    inlines = [RunTagInline]
    show_full_result_count = False


@admin.register(models.Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("id", "run", "step_name", "status", "attempt", "worker_host")
    list_filter = ("status",)
    raw_id_fields = ("run", "step", "origin_task")
    show_full_result_count = False


@admin.register(models.Step)
class StepAdmin(admin.ModelAdmin):
    list_display = ("run", "name", "status")
    raw_id_fields = ("run",)
    show_full_result_count = False


@admin.register(models.Artifact)
class ArtifactAdmin(admin.ModelAdmin):
    list_display = ("task", "attempt", "name", "type_name")
    raw_id_fields = ("task", "blob")
    show_full_result_count = False


@admin.register(models.TagEvent)
class TagEventAdmin(admin.ModelAdmin):
    list_display = ("run", "actor", "created_at", "added", "removed")
    raw_id_fields = ("run", "user")
    show_full_result_count = False


admin.site.register(models.TagCount)
admin.site.register(models.CodePackage)
admin.site.register(models.ArtifactBlob)


@admin.register(models.Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    """Read-only, because changes made here would skip the beat schedule and the audit
    log. Staff change deployments on the dashboard's Deployments page."""

    list_display = ("flow", "namespace", "deployed_by", "deployed_at", "schedule", "paused")
    search_fields = ("flow__name", "namespace")
    # The hash is of no use to a reader; the token itself is never stored.
    exclude = ("token_hash",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(models.DeploymentEvent)
class DeploymentEventAdmin(admin.ModelAdmin):
    """The audit log is read-only here, as everywhere else."""

    list_display = ("created_at", "flow_name", "action", "actor", "namespace")
    list_filter = ("action",)
    search_fields = ("flow_name", "actor")
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
