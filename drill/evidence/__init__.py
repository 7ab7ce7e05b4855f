"""Evidence bundles: one file an auditor can verify offline."""
