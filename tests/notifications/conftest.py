from tests.doubles.chat import chat, chat_server  # noqa: F401 - fixtures
from tests.doubles.receiver import receiver, receiver_server  # noqa: F401 - fixtures
from tests.doubles.sendgrid import sendgrid, sendgrid_server  # noqa: F401 - fixtures
