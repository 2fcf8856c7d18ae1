from . import admin_audiences, admin_campaigns  # noqa: F401 - their registrations
