"""Statistics for every decision perennial makes: paired tests for the offline gate, fixed-horizon
and sequential tests for live rollouts, power and sample sizes. Pure functions over arrays."""
