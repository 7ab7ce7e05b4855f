"""What an agent has, as the coordinator needs to know it: its host, targets and repositories with their sites.

No secret and no repository URL is in it (a URL may hold credentials); a
repository is named, and placed at a site. The embedded mode reads it from the
agent's config; the fleet's enrolment sends it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from agents.contract.documents import Document

INVENTORY_SCHEMA = "drill.inventory/v1"

Name = Annotated[str, Field(min_length=1, max_length=256)]


class TargetInfo(Document):
    kind: Name


class RepositoryInfo(Document):
    site: Name
    id: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$",
                           description="restic's id of the repository (restic cat config): how hosts that name one "
                           "repository differently are matched. Absent until the agent has read it.")


class PolicyInfo(Document):
    targets: list[Name]
    repository: Name
    replicate_to: list[Name] = Field(default_factory=list)


class Inventory(Document):
    schema_: str = Field(default=INVENTORY_SCHEMA, alias="schema")
    host: Name
    targets: dict[str, TargetInfo] = Field(default_factory=dict)
    repositories: dict[str, RepositoryInfo] = Field(default_factory=dict)
    policies: dict[str, PolicyInfo] = Field(default_factory=dict)

    @property
    def sites(self) -> set[str]:
        return {repository.site for repository in self.repositories.values()}

    def repository_at(self, site: str) -> str | None:
        """The name of the agent's repository at ``site`` (the first by name), or None."""
        return next((name for name, info in sorted(self.repositories.items()) if info.site == site), None)
