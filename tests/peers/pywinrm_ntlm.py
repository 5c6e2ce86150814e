"""pywinrm over NTLM against the lab: message encryption over HTTP, channel binding over HTTPS.

Usage: python3 pywinrm_ntlm.py HTTP_ENDPOINT HTTPS_ENDPOINT CA_FILE USER   (password in $LAB_PASSWORD)
Prints one line per check; exits non-zero on the first failure.
"""
import os
import sys

import winrm
from winrm.exceptions import InvalidCredentialsError

from peercheck import check  # tests/peers/peercheck.py (the script's folder is on sys.path)


def main():
    http, https, ca, user = sys.argv[1:5]
    password = os.environ["LAB_PASSWORD"]

    # Every message sealed with the NTLM session key (MS-WSMV multipart/encrypted).
    s = winrm.Session(http, auth=(user, password), transport="ntlm", message_encryption="always")
    r = s.run_cmd("hostname")
    check("ntlm/http hostname", (r.status_code, r.std_out), (0, b"LAB-IQSVC01\r\n"))
    r = s.run_cmd("whoami")
    check("ntlm/http whoami", r.std_out, f"lab-iqsvc01\\{user}\r\n".encode())
    r = s.run_cmd("echo", ["Zoë", "Ødegård"])
    check("ntlm/http utf-8 echo", r.std_out, "Zoë Ødegård\r\n".encode())

    # HTTPS, the lab's certificate trusted through its CA file; requests_ntlm binds the channel.
    s = winrm.Session(
        https,
        auth=(user, password),
        transport="ntlm",
        server_cert_validation="validate",
        ca_trust_path=ca,
    )
    r = s.run_cmd("hostname")
    check("ntlm/https hostname", (r.status_code, r.std_out), (0, b"LAB-IQSVC01\r\n"))

    bad = winrm.Session(http, auth=(user, "wrong-" + password), transport="ntlm", message_encryption="always")
    try:
        bad.run_cmd("hostname")
        check("ntlm wrong password", "accepted", "InvalidCredentialsError")
    except InvalidCredentialsError:
        check("ntlm wrong password", "InvalidCredentialsError", "InvalidCredentialsError")


if __name__ == "__main__":
    main()
