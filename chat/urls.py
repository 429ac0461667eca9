from django.urls import path

from chat import pages, views

app_name = "chat"
urlpatterns = [
    path("", pages.index, name="index"),
    path("api/rooms", views.rooms, name="rooms"),
    path("api/rooms/<slug:slug>/messages", views.messages, name="messages"),
    path("api/direct/<int:user_id>", views.direct, name="direct"),
    path("api/rooms/<slug:slug>/call", views.call, name="call"),
    path("api/calls/ice-servers", views.ice_servers, name="ice-servers"),
]
