"""The coordinator side of drill: the evidence ledger, DR drills, evidence bundles, reports and the demo.

It reaches agents only through ``agents.api`` (their one entry point) and the
documents of ``agents.contract``, as it will over the network.
"""
