"""The `onnxshap` program: `python -m onnxshap` and the `onnxshap` script run `main()`."""

from collections.abc import Callable
from typing import NoReturn

from onnxshap._interrupt import run_program


def _command_line() -> Callable[[], int]:
    from onnxshap.cli import main  # after the Ctrl-C handler is in place (onnxshap/_interrupt.py)

    return main


def main() -> NoReturn:
    """Run the command line on sys.argv and end the process with its exit code (130 after Ctrl-C)."""
    run_program(_command_line)


if __name__ == "__main__":
    main()
