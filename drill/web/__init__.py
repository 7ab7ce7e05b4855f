"""The web view of ``drillctl serve``: local accounts, sessions, and pages for ops and auditors."""
