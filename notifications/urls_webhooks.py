"""/api/v1/webhooks/."""

urlpatterns = []
