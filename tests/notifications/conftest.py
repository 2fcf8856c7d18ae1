from tests.doubles.sendgrid import sendgrid, sendgrid_server  # noqa: F401 - fixtures
