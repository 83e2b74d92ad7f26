from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from runs.api import resume_views, views

RUN = "runs/<str:flow>/<str:run_id>"
TASK = "tasks/<str:flow>/<str:run_id>/<str:step>/<str:task_id>"

urlpatterns = [
    path("schema", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("login", views.LoginView.as_view(), name="api-login"),
    path("whoami", views.WhoAmIView.as_view(), name="api-whoami"),
    path("namespaces", views.NamespaceListView.as_view(), name="api-namespaces"),
    path("tags/suggest", views.TagSuggestView.as_view(), name="api-tag-suggest"),
    path("tokens", views.TokenListView.as_view(), name="api-tokens"),
    path("tokens/<int:token_id>", views.TokenDetailView.as_view(), name="api-token"),
    path("flows", views.FlowListView.as_view(), name="api-flows"),
    path("flows/<str:flow>", views.FlowDetailView.as_view(), name="api-flow"),
    path("flows/<str:flow>/resume", resume_views.FlowResumeView.as_view(),
         name="api-flow-resume"),
    path("runs", views.RunListView.as_view(), name="api-runs"),
    path(RUN, views.RunDetailView.as_view(), name="api-run"),
    path(f"{RUN}/cancel", views.RunCancelView.as_view(), name="api-run-cancel"),
    path(f"{RUN}/tags", views.RunTagsView.as_view(), name="api-run-tags"),
    path(f"{RUN}/tag-events", views.RunTagEventsView.as_view(), name="api-run-tag-events"),
    path(f"{RUN}/logs", views.RunLogsView.as_view(), name="api-run-logs"),
    path(f"{RUN}/resume", resume_views.RunResumeView.as_view(), name="api-run-resume"),
    path(f"{RUN}/steps", views.StepListView.as_view(), name="api-steps"),
    path(f"{RUN}/steps/<str:step>", views.StepDetailView.as_view(), name="api-step"),
    path(f"{RUN}/steps/<str:step>/tasks", views.TaskListView.as_view(), name="api-tasks"),
    path(TASK, views.TaskDetailView.as_view(), name="api-task"),
    path(f"{TASK}/logs", views.TaskLogsView.as_view(), name="api-task-logs"),
    path(f"{TASK}/artifacts", views.TaskArtifactsView.as_view(), name="api-artifacts"),
    path(f"{TASK}/artifacts/<str:name>", views.ArtifactDetailView.as_view(),
         name="api-artifact"),
    path(f"{TASK}/artifacts/<str:name>/bytes", views.ArtifactBytesView.as_view(),
         name="api-artifact-bytes"),
]
