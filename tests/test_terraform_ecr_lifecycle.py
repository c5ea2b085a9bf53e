"""The ECR lifecycle policy, as Terraform renders it, against a simulated repository history.

Every push of the trainer image is an OCI index (provenance and SBOM on): a tagged index whose
platform manifest and attestation manifests are untagged children pushed with it. The trigger pins a
run to the index digest, so a run needs the index and every child pullable. What must survive an
evaluation of the policy:

- every image (index and children) pushed within the life of a run record (checkpoint_expiration_days),
  which a run record, a Spot resume, reconcile or a retrain of a recent push can name;
- every published model version's image, the champion's included, forever: when the run that published
  it succeeds, the trigger tags the index `keep-<run_id>` and the n-th child it lists `keep-<run_id>-<n>`
  (docs/contracts.md, trigger.keep);

and what must go, so storage stays bounded: everything else older than ecr_image_retention_days,
orphans of interrupted pushes included.

The simulator follows ECR's documented evaluation rules (ECR user guide, "Lifecycle policies": rules
apply in rulePriority order; an image that matches the tag selection of a higher-priority rule cannot
be expired by a lower-priority one, though it still counts for a lower rule's imageCountMoreThan; an
image is expired by at most one rule; sinceImagePushed expires images older than countNumber days).
ECR's documentation does not say whether a lifecycle rule expires an untagged manifest that a kept
index references (its API refuses such a delete with ImageReferencedByManifestList), so every case runs
under both answers.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tfread.terraform import TerraformModule
from trigger.keep import keep_tag

REPO = Path(__file__).resolve().parent.parent
ACCOUNT, REGION = "123456789012", "us-east-1"


@dataclass(frozen=True)
class Image:
    """One manifest in the repository: its digest, age in days, tags, and the digests it lists (an index)."""

    digest: str
    age_days: float
    tags: frozenset[str] = frozenset()
    children: tuple[str, ...] = ()


def _tag_matches(tag: str, pattern: str) -> bool:
    """ECR's tagPatternList wildcard: `*` is any run of characters, everything else is literal."""
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), tag) is not None


def _selects(selection: dict[str, Any], image: Image) -> bool:
    status = selection["tagStatus"]
    if status == "any":
        return True
    if status == "untagged":
        return not image.tags
    if not image.tags:
        return False
    patterns = selection.get("tagPatternList")
    if patterns is not None:
        return all(any(_tag_matches(tag, p) for tag in image.tags) for p in patterns)
    return all(any(tag.startswith(p) for tag in image.tags) for p in selection["tagPrefixList"])


def expire(policy: dict[str, Any], images: list[Image], honors_index_references: bool) -> set[str]:
    """The digests one evaluation of `policy` expires."""
    claimed: set[str] = set()
    expired: set[str] = set()
    for rule in sorted(policy["rules"], key=lambda r: r["rulePriority"]):
        assert rule["action"]["type"] == "expire"
        selection = rule["selection"]
        selected = [image for image in images if _selects(selection, image)]
        if selection["countType"] == "imageCountMoreThan":
            # Youngest first; images claimed by a higher rule still take their place in the count.
            ranked = sorted(selected, key=lambda image: image.age_days)
            candidates = ranked[selection["countNumber"] :]
        else:
            assert selection["countType"] == "sinceImagePushed" and selection["countUnit"] == "days"
            candidates = [image for image in selected if image.age_days > selection["countNumber"]]
        expired |= {image.digest for image in candidates if image.digest not in claimed}
        claimed |= {image.digest for image in selected}
    if honors_index_references:
        changed = True
        while changed:
            kept_children = {c for image in images if image.digest not in expired for c in image.children}
            changed = bool(expired & kept_children)
            expired -= kept_children
    return expired


def _digest(*parts: object) -> str:
    return "sha256:" + hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


@dataclass(frozen=True)
class History:
    images: list[Image]
    needed: set[str]  # digests a run record or a published version can still name
    disposable: set[str]  # unprotected digests older than the retention: storage the policy must free


def history(run_record_days: int, retention_days: int) -> History:
    """A year and more of pushes every other day, three manifests each, some published, some orphans."""
    images: list[Image] = []
    needed: set[str] = set()
    published_ages = {400: 1, 250: 2, 120: 3, 40: 4, 6: 5}  # age in days -> model version (5 is champion)
    for age in range(0, 420, 2):
        index, children = _digest("index", age), (_digest("platform", age), _digest("attestation", age))
        version = published_ages.get(age)
        run_id = f"push-{hashlib.sha256(index.encode()).hexdigest()[:20]}"
        keep = {keep_tag(run_id)} if version else set()
        git_sha = hashlib.sha1(str(age).encode(), usedforsecurity=False).hexdigest()
        images.append(Image(index, age + 0.01, frozenset({git_sha, *keep}), children))
        for n, child in enumerate(children, start=1):
            child_keep = {keep_tag(run_id, n)} if version else set()
            images.append(Image(child, age + 0.01, frozenset(child_keep)))
        if version or age < run_record_days:
            needed |= {index, *children}
    for age in range(1, 420, 45):  # interrupted pushes: an untagged manifest nothing lists
        images.append(Image(_digest("orphan", age), age + 0.5))
    disposable = {i.digest for i in images if i.age_days > retention_days and i.digest not in needed}
    return History(images, needed, disposable)


def rendered_policy(module: TerraformModule) -> dict[str, Any]:
    scope = module.scope(
        {("data.aws_caller_identity", "account_id"): ACCOUNT, ("data.aws_partition", "partition"): "aws"}
    )
    return json.loads(module.argument("aws_ecr_lifecycle_policy", "policy", scope))


@pytest.fixture(scope="module")
def module() -> TerraformModule:
    return TerraformModule.load(REPO / "terraform")


@pytest.mark.parametrize("honors_index_references", [True, False], ids=["ecr-keeps-children", "ecr-ignores-index"])
def test_policy_keeps_every_digest_a_run_or_a_published_version_needs(
    module: TerraformModule, honors_index_references: bool
) -> None:
    # GIVEN the rendered policy and a history built with the stack's defaults
    policy = rendered_policy(module)
    run_record_days = module.variables["checkpoint_expiration_days"]
    retention = module.variables["ecr_image_retention_days"]
    repository = history(run_record_days, retention)
    # WHEN ECR evaluates it
    expired = expire(policy, repository.images, honors_index_references)
    # THEN no needed index or child is expired, and every unprotected image past the retention is
    assert repository.needed & expired == set()
    assert repository.disposable - expired == set()
    assert repository.disposable, "the history must hold images the policy should free"


def test_the_seed_policy_fails_the_same_simulation(module: TerraformModule) -> None:
    # GIVEN the policy this stack had (untagged after a day, then the 30 most recent of "any")
    seed = {
        "rules": [
            {
                "rulePriority": 1,
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": 1,
                },
                "action": {"type": "expire"},
            },
            {
                "rulePriority": 2,
                "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 30},
                "action": {"type": "expire"},
            },
        ]
    }
    repository = history(module.variables["checkpoint_expiration_days"], module.variables["ecr_image_retention_days"])
    # THEN it loses needed digests whichever way ECR treats index children: children after a day, and
    # "30 images" counts manifests, three per push, so a published version's index goes too
    for honors in (True, False):
        assert repository.needed & expire(seed, repository.images, honors)


def test_no_rule_counts_manifests_and_untagged_never_outlive_nor_precede_their_index(module: TerraformModule) -> None:
    policy = rendered_policy(module)
    selections = [rule["selection"] for rule in sorted(policy["rules"], key=lambda r: r["rulePriority"])]
    # The only count is the keep-* guard, which no history reaches: a count over "any" or untagged
    # images would count manifests (three per push), not pushes
    (guard,) = [s for s in selections if s["countType"] == "imageCountMoreThan"]
    assert guard["tagStatus"] == "tagged" and guard["tagPatternList"] == ["keep-*"]
    assert selections[0] == guard
    # One age for tagged and untagged alike (an index's children never go before it), at least the
    # life of a run record
    (age,) = [s for s in selections if s["countType"] == "sinceImagePushed"]
    assert age["tagStatus"] == "any" and selections[-1] == age
    assert age["countNumber"] == module.variables["ecr_image_retention_days"]
    assert module.variables["ecr_image_retention_days"] >= module.variables["checkpoint_expiration_days"]


def test_the_keep_guard_is_a_count_and_its_stated_limit_is_its_count(module: TerraformModule) -> None:
    # GIVEN the keep-* guard (a lifecycle rule can only expire, so "never" is a count with an end)
    policy = rendered_policy(module)
    (guard,) = [r["selection"] for r in policy["rules"] if r["selection"]["countType"] == "imageCountMoreThan"]
    limit = guard["countNumber"]
    per_version = 3  # a published version's index and its two manifests, each tagged keep-

    def published(versions: int) -> list[Image]:
        images = []
        for v in range(versions):
            index, children = _digest("index", v), (_digest("child", v, 0), _digest("child", v, 1))
            age = 10_000 - v  # the first version is the oldest
            images.append(Image(index, age, frozenset({keep_tag(f"run-{v}")}), children))
            images += [Image(c, age, frozenset({keep_tag(f"run-{v}", n)})) for n, c in enumerate(children)]
        return images

    # WHEN as many published versions exist as the guard holds, nothing expires; one more, and the
    # oldest version's images are the first to go (as ecr.tf and the README say)
    fits = limit // per_version
    assert expire(policy, published(fits), honors_index_references=False) == set()
    over = published(fits + 1)
    expired = expire(policy, over, honors_index_references=False)
    assert expired and expired <= {image.digest for image in over[:per_version]}
    # THEN the numbers the docs state are the policy's
    for doc in (REPO / "terraform" / "ecr.tf", REPO / "terraform" / "README.md"):
        text = doc.read_text(encoding="utf-8")
        assert f"{limit:,}" in text and f"{fits:,}" in text, doc
