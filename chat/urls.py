from django.urls import path

from chat import pages, views

app_name = "chat"
urlpatterns = [
    path("", pages.index, name="index"),
    path("api/rooms", views.room_list, name="rooms"),
    path("api/rooms/<slug:slug>/messages", views.messages, name="messages"),
    path("api/rooms/<slug:slug>/read", views.read, name="read"),
    path("api/rooms/<slug:slug>/leave", views.leave, name="leave"),
    path("api/rooms/<slug:slug>/ring", views.ring, name="ring"),
    path("api/people", views.people_search, name="people"),
    path("api/calls", views.call_list, name="calls"),
    path("api/direct/<int:user_id>", views.direct, name="direct"),
    path("api/rooms/<slug:slug>/call", views.call, name="call"),
    path("api/calls/ice-servers", views.ice_servers, name="ice-servers"),
]
