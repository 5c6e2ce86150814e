"""An SMTP server that captures every message into a Maildir (aiosmtpd), for the tests.

Usage: smtp_sink.py PORT MAILDIR

With SINK_USER and SINK_PASSWORD in the environment (never on the command line, where `ps`
shows them) it offers AUTH PLAIN/LOGIN over plain SMTP and accepts only that credential;
the number of successful logins is written to MAILDIR/auth-ok.
Runs until killed.
"""
import os
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword


def main():
    port, maildir = int(sys.argv[1]), sys.argv[2]
    user, password = os.environ.get("SINK_USER"), os.environ.get("SINK_PASSWORD")
    logins = {"ok": 0}

    def authenticator(server, session, envelope, mechanism, data):
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == user
            and data.password.decode() == password
        )
        if ok:
            logins["ok"] += 1
            with open(os.path.join(maildir, "auth-ok"), "w") as f:
                f.write(str(logins["ok"]))
        return AuthResult(success=ok)

    kwargs = {}
    if user is not None and password is not None:
        kwargs = {
            "authenticator": authenticator,
            "auth_require_tls": False,
            "auth_required": True,
        }
    controller = Controller(Mailbox(maildir), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
