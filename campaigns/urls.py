from django.urls import include, path

urlpatterns = [
    path("audiences/", include("campaigns.urls_audiences")),
    path("", include("campaigns.urls_campaigns")),
]
