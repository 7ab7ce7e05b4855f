"""What the agent and the coordinator share, and nothing else.

The coordinator (``drill``) may import this package and the agent's door
(:mod:`agents.api`), never the agent's internals; ``tests/unit/test_layers.py``
enforces it. Here live:

* :mod:`~agents.contract.records` -- ``drill.result/v1``: what a job (or a drill) says happened;
* :mod:`~agents.contract.jobs` -- ``drill.job/v1``: what a coordinator asks an agent to do;
* :mod:`~agents.contract.inventory` -- what an agent has (targets, repositories, sites);
* :mod:`~agents.contract.signing` -- keys and DSSE envelopes: how a document is signed;
* :mod:`~agents.contract.errors` -- :class:`DrillError`, the base of every error with a stable code;
* :mod:`~agents.contract.configfile` -- how every config file is read and its problems reported.
"""
