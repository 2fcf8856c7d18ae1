"""/api/v1/inbox/."""

urlpatterns = []
