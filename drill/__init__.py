"""The coordinator side of drill: demos, and (in later steps) verification plans, drills and evidence."""
