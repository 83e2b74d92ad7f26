from django.urls import path

from runs.web import deploy_views, resume_views, run_views, task_views, views

app_name = "runs"

RUN = "runs/<str:flow>/<str:run_id>"
TASK = f"{RUN}/<str:step>/<str:task_id>"

urlpatterns = [
    path("", views.run_list, name="list"),
    path("go", views.go, name="go"),
    path("tags/suggest", views.tag_suggest, name="tag-suggest"),
    path("runs/bulk-tags", views.runs_bulk_tag, name="bulk-tag"),
    path("flows/<str:flow>", views.flow_detail, name="flow"),
    path("deployments", deploy_views.deployment_list, name="deployments"),
    path("deployments/<str:flow>", deploy_views.deployment_detail, name="deployment"),
    path("deployments/<str:flow>/<str:action>", deploy_views.deployment_action,
         name="deployment-action"),
    path(RUN, run_views.run_detail, name="run"),
    path(f"{RUN}/tags", run_views.run_tags, name="run-tags"),
    path(f"{RUN}/resume", resume_views.run_resume_page, name="resume"),
    path(TASK, task_views.task_detail, name="task"),
    path(f"{TASK}/logs/<str:stream>.txt", task_views.task_log_download, name="task-log"),
    path(f"{TASK}/artifacts/<str:name>", task_views.artifact_download, name="artifact"),
]
