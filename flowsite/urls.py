from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from runs import health
from tokens.login_views import ThrottledLoginView

urlpatterns = [
    # The admin's own login form has no throttle, so it sends people to the site's one.
    path("admin/login/", RedirectView.as_view(pattern_name="login", query_string=True)),
    path("admin/", admin.site.urls),
    path("login/", ThrottledLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", health.liveness, name="healthz"),
    path("readyz", health.readiness, name="readyz"),
    path("api/v1/", include("runs.api.urls")),
    path("account/", include("tokens.urls")),
    path("", include("runs.urls")),
]
