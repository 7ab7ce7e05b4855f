"""The agent's configuration: one YAML file, one schema, every error reported at once."""
