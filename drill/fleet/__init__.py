"""The coordinator as a service: agents on many hosts enrol with it, pull signed jobs, push signed records."""
