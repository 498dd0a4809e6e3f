"""The `onnxshap` program: `python -m onnxshap` and the `onnxshap` script run `main()`."""

import sys
from typing import NoReturn

from onnxshap._interrupt import EXIT_INTERRUPTED, exit_now, install


def main() -> NoReturn:
    """Run the command line on sys.argv and end the process with its exit code.

    Ctrl-C is handled before the command line's modules are imported, so at any moment it gives one
    message and exit code 130 (onnxshap/_interrupt.py)."""
    install()
    from onnxshap.cli import main as run_command

    code = run_command()
    if code == EXIT_INTERRUPTED:
        exit_now(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
