from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from runs import health
from tokens.login_views import ThrottledLoginView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("login/", ThrottledLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", health.liveness, name="healthz"),
    path("readyz", health.readiness, name="readyz"),
    path("api/v1/", include("runs.api.urls")),
    path("account/", include("tokens.urls")),
    path("", include("runs.urls")),
]
