from django.urls import path

from runs.web import views

app_name = "runs"

RUN = "runs/<str:flow>/<str:run_id>"

urlpatterns = [
    path("", views.run_list, name="list"),
    path("flows/<str:flow>", views.flow_detail, name="flow"),
    path(RUN, views.run_detail, name="run"),
    path(f"{RUN}/<str:step>/<str:task_id>", views.task_detail, name="task"),
]
