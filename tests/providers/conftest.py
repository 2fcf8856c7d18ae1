from tests.providers.sendgrid_double import sendgrid, sendgrid_server  # noqa: F401 - fixtures
