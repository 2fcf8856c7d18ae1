"""/api/v1/providers/."""

from rest_framework.routers import SimpleRouter

from .api import ProviderConfigViewSet

router = SimpleRouter()
router.register("", ProviderConfigViewSet, basename="provider")

urlpatterns = router.urls
