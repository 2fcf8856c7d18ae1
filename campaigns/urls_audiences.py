"""/api/v1/campaigns/audiences/."""

from rest_framework.routers import SimpleRouter

from .audiences_api import AudienceViewSet

router = SimpleRouter()
router.register("", AudienceViewSet, basename="audience")

urlpatterns = router.urls
