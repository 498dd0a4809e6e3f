"""`python -m onnxshap` runs the command line (same as the `onnxshap` script)."""

from onnxshap.cli import main

raise SystemExit(main())
