"""Everything the agent knows about restic: the only code that builds, runs and parses restic commands."""
