#!/usr/bin/env python3
"""ExaBGP API process for the routelet interop tests: appends every JSON message ExaBGP writes
to our stdin (received updates, neighbor state changes) to the file named by argv[1], one per
line, flushed at once so the test can poll the file."""
import sys


def main() -> int:
    if len(sys.argv) != 2:
        sys.stderr.write("usage: exabgp_log.py OUTFILE\n")
        return 2
    with open(sys.argv[1], "a", buffering=1, encoding="utf-8") as out:
        while True:
            line = sys.stdin.readline()
            if not line:
                return 0
            out.write(line if line.endswith("\n") else line + "\n")
            out.flush()


if __name__ == "__main__":
    sys.exit(main())
