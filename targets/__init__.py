"""What is backed up: each kind of target knows how to capture its data with a manifest."""
