"""HTTP routes."""

from django.contrib import admin
from django.contrib.auth.views import LoginView
from django.urls import include, path

from dashboard import views as dashboard_views
from project import views

urlpatterns = [
    path("", dashboard_views.index, name="dashboard"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/login/", LoginView.as_view(), name="login"),
    path("ws/", include("ws.urls")),
    path("chat/", include("chat.urls")),
]
