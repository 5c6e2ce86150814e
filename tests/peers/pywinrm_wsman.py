"""Drive the mailboxd lab WinRM service with pywinrm, an independent WinRM client.

Usage: pywinrm_lab.py URL USER PASSWORD HOSTNAME MAX_SHELLS

The lab must offer the cmd builtins plus `slow <ms>`: reads stdin, then after <ms> prints
`slow done` and exits 7 (the lab's Receive hold time is shorter, so pywinrm sees TimedOut faults).
Exits non-zero (with a message) on the first mismatch.
"""
import sys

import winrm
from winrm.exceptions import InvalidCredentialsError, WSManFaultError


def check(what, got, want):
    if got != want:
        print(f"FAIL {what}: got {got!r}, want {want!r}", file=sys.stderr)
        sys.exit(1)
    print(f"ok   {what}")


def main():
    url, user, password, hostname, max_shells = sys.argv[1:6]
    max_shells = int(max_shells)
    s = winrm.Session(url, auth=(user, password), transport="basic")

    r = s.run_cmd("hostname")
    check("hostname stdout", r.std_out, hostname.encode() + b"\r\n")
    check("hostname status", r.status_code, 0)
    check("hostname stderr", r.std_err, b"")

    r = s.run_cmd("echo", ["hello"])
    check("echo stdout", r.std_out, b"hello\r\n")
    check("echo status", r.status_code, 0)

    r = s.run_cmd("whoami")
    check("whoami stdout", r.std_out, (hostname.lower() + "\\" + user.lower()).encode() + b"\r\n")

    r = s.run_cmd("nosuchcmd")
    check("nosuchcmd status", r.status_code, 1)
    check("nosuchcmd stdout", r.std_out, b"")
    check(
        "nosuchcmd stderr",
        r.std_err,
        b"'nosuchcmd' is not recognized as an internal or external command,\r\n"
        b"operable program or batch file.\r\n",
    )

    # The raw protocol sequence.
    p = s.protocol
    shell_id = p.open_shell()
    check("shell id is an upper-case GUID", (len(shell_id), shell_id.upper()), (36, shell_id))
    command_id = p.run_command(shell_id, "cmd.exe", ["/c", "echo", "raw"])
    out, err, code = p.get_command_output(shell_id, command_id)
    check("raw stdout", out, b"raw\r\n")
    check("raw stderr", err, b"")
    check("raw status", code, 0)
    p.cleanup_command(shell_id, command_id)

    command_id = p.run_command(shell_id, "whoami")
    out, err, code = p.get_command_output(shell_id, command_id)
    check("raw whoami", out, (hostname.lower() + "\\" + user.lower()).encode() + b"\r\n")
    p.cleanup_command(shell_id, command_id)
    p.close_shell(shell_id)

    # A closed shell is gone: Windows answers InvalidSelectors (HTTP 500 fault).
    try:
        p.run_command(shell_id, "hostname")
    except WSManFaultError as e:
        check("closed shell: wsman fault code", e.wsman_fault_code, 2150858843)
        check("closed shell: subcode", e.fault_subcode, "w:InvalidSelectors")
        check("closed shell: HTTP status", e.code, 500)
    else:
        check("command on closed shell faults", "no error", "WSManFaultError")

    # Stdin + a process slower than the Receive hold: pywinrm re-polls on TimedOut faults.
    shell_id = p.open_shell(codepage=65001, noprofile=True)
    command_id = p.run_command(shell_id, "slow", ["2500"], console_mode_stdin=False)
    p.send_command_input(shell_id, command_id, b"x" * 1000, end=False)
    p.send_command_input(shell_id, command_id, b"y", end=True)
    out, err, code = p.get_command_output(shell_id, command_id)
    check("slow stdout", out, b"slow done\r\n")
    check("slow status", code, 7)
    p.cleanup_command(shell_id, command_id)
    p.close_shell(shell_id)

    # Shell quota: MaxShellsPerUser shells open, the next Create is a QuotaLimit fault.
    shells = [p.open_shell() for _ in range(max_shells)]
    try:
        p.open_shell()
    except WSManFaultError as e:
        check("quota: wmi error code", e.wmierror_code, 2150859173)
        check("quota: subcode", e.fault_subcode, "w:QuotaLimit")
    else:
        check("quota exceeded", "no error", "WSManFaultError")
    p.close_shell(shells.pop())
    shells.append(p.open_shell())
    for sid in shells:
        p.close_shell(sid)
    print("ok   quota freed by close_shell")

    # Wrong password: pywinrm raises InvalidCredentialsError on 401.
    bad = winrm.Session(url, auth=(user, password + "x"), transport="basic")
    try:
        bad.run_cmd("hostname")
    except InvalidCredentialsError:
        print("ok   wrong password -> InvalidCredentialsError")
    else:
        check("wrong password", "no error", "InvalidCredentialsError")

    print("pywinrm: all checks passed")


if __name__ == "__main__":
    main()
