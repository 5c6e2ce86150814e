"""The peer scripts' one assertion: print `ok   NAME`, or `FAIL NAME: …` and exit 1."""
import sys


def check(name, got, want):
    if got != want:
        print(f"FAIL {name}: got {got!r}, want {want!r}")
        sys.exit(1)
    print(f"ok   {name}")
