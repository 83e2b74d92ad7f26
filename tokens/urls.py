from django.urls import path

from tokens import views

app_name = "tokens"

urlpatterns = [
    path("tokens/", views.token_list, name="list"),
    path("tokens/<int:token_id>/revoke", views.token_revoke, name="revoke"),
]
