"""`python -m medrg.training --config ...` (what `torchrun`/`accelerate launch` start on every process)."""

from medrg.training.cli import main

raise SystemExit(main())
