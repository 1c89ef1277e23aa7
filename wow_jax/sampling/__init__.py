"""Generation: flow-matching schedules and solvers (UniPC, Euler), CFG, the I2V/T2V generator,
long-horizon rollouts, mode `generate`, and imagined-vs-real metrics (docs/generation.md)."""
