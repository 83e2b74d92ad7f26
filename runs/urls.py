from django.urls import path

from runs.web import deploy_views, resume_views, views

app_name = "runs"

RUN = "runs/<str:flow>/<str:run_id>"

urlpatterns = [
    path("", views.run_list, name="list"),
    path("flows/<str:flow>", views.flow_detail, name="flow"),
    path("deployments", deploy_views.deployment_list, name="deployments"),
    path("deployments/<str:flow>", deploy_views.deployment_detail, name="deployment"),
    path("deployments/<str:flow>/<str:action>", deploy_views.deployment_action,
         name="deployment-action"),
    path(RUN, views.run_detail, name="run"),
    path(f"{RUN}/resume", resume_views.run_resume_page, name="resume"),
    path(f"{RUN}/<str:step>/<str:task_id>", views.task_detail, name="task"),
]
