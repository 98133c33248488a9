"""The MedRG benchmark harness behind `python benchmarks/run_all.py`: one module per section
(`inference`, `scaling`, `roofline`, `gpu`), shared helpers in `common`, the target table in `targets`."""
