from django.urls import path

from ws import views

app_name = "ws"
urlpatterns = [
    path("token", views.token, name="token"),
    path("metrics", views.metrics, name="metrics"),
]
