"""pywinrm (an independent WinRM client) against the lab.

Usage: python3 pywinrm_lab.py ENDPOINT USER   (password in $LAB_PASSWORD)
Prints one line per check; exits non-zero on the first failure.
"""
import os
import sys

import winrm
from winrm.protocol import Protocol

from peercheck import check  # tests/peers/peercheck.py (the script's folder is on sys.path)


def main():
    endpoint, user = sys.argv[1], sys.argv[2]
    password = os.environ["LAB_PASSWORD"]
    s = winrm.Session(endpoint, auth=(user, password), transport="basic")

    r = s.run_cmd("hostname")
    check("hostname status", r.status_code, 0)
    check("hostname output", r.std_out, b"LAB-IQSVC01\r\n")

    r = s.run_cmd("echo", ["hello", "world"])
    check("echo output", r.std_out, b"hello world\r\n")

    r = s.run_cmd("whoami")
    check("whoami output", r.std_out, f"lab-iqsvc01\\{user}\r\n".encode())

    r = s.run_cmd("nosuchcmd")
    check("unknown command status", r.status_code, 1)
    check(
        "unknown command stderr",
        r.std_err,
        b"'nosuchcmd' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n",
    )

    # The raw protocol sequence, as scripts built on pywinrm use it.
    p = Protocol(endpoint=endpoint, transport="basic", username=user, password=password)
    shell = p.open_shell(codepage=65001)
    cmd = p.run_command(shell, "cmd.exe", ["/c", "echo", "raw"])
    out, err, code = p.get_command_output(shell, cmd)
    p.cleanup_command(shell, cmd)
    p.close_shell(shell)
    check("raw protocol output", (out, err, code), (b"raw\r\n", b"", 0))

    # Wrong password: refused.
    bad = winrm.Session(endpoint, auth=(user, "wrong"), transport="basic")
    try:
        bad.run_cmd("hostname")
        print("FAIL wrong password was accepted")
        sys.exit(1)
    except winrm.exceptions.InvalidCredentialsError:
        print("ok   wrong password refused")


if __name__ == "__main__":
    main()
