"""End-to-end runs in the simulated world (the quickstart): they use the simulator as data source and judge."""
