"""The seed shows no HTTP views: an empty URLconf."""

urlpatterns: list[object] = []
