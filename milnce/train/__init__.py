"""Training: a run from a config and its plumbing (checkpoint IO, failure budget, throughput, threads, schedules) and the tables built from runs."""
