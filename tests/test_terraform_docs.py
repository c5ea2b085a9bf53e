"""The generated inputs/outputs tables (scripts/tf_docs.py) and the documentation they sit in."""

from __future__ import annotations

from pathlib import Path

import pytest
from tf_docs import DocsError, main, render, updated_readme

REPO = Path(__file__).resolve().parent.parent
ROOTS = [REPO / "terraform", REPO / "terraform" / "bootstrap"]


def write_root(directory: Path, tf: str, readme: str = "prose\n<!-- BEGIN_TF_DOCS -->\n<!-- END_TF_DOCS -->\n") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "variables.tf").write_text(tf, encoding="utf-8")
    (directory / "README.md").write_text(readme, encoding="utf-8")
    return directory


def test_committed_readmes_hold_the_current_tables() -> None:
    # GIVEN both roots as committed; THEN regenerating their tables changes nothing
    assert main(["--check", *map(str, ROOTS)]) == 0


def test_a_stale_table_fails_the_check_and_is_rewritten_without_check(tmp_path: Path) -> None:
    # GIVEN a root whose README has an empty table
    root = write_root(tmp_path / "root", 'variable "region" {\n  description = "AWS region."\n  type = string\n}\n')
    # WHEN checked, THEN it is stale; WHEN generated, THEN the table names the required variable
    assert main(["--check", str(root)]) == 1
    assert main([str(root)]) == 0
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("prose\n<!-- BEGIN_TF_DOCS -->\n## Inputs")
    assert "| `region` | AWS region. | `string` | n/a | yes |" in readme
    assert main(["--check", str(root)]) == 0


def test_defaults_types_and_placeholders_render_as_markdown(tmp_path: Path) -> None:
    root = write_root(
        tmp_path / "root",
        'variable "size" {\n  description = "Bucket <name>, a | b."\n'
        "  type = object({ cpu = number })\n  default = { cpu = 256 }\n}\n"
        'output "arn" {\n  description = "ARN."\n  value = 1\n}\n',
    )
    table = render(root)
    assert '| `size` | Bucket &lt;name&gt;, a \\| b. | `object({cpu = number})` | `{"cpu": 256}` | no |' in table
    assert "| `arn` | ARN. |" in table


def test_a_variable_without_description_is_an_error_naming_it(tmp_path: Path) -> None:
    root = write_root(tmp_path / "root", 'variable "region" {\n  type = string\n}\n')
    with pytest.raises(DocsError, match="variable 'region'"):
        render(root)


def test_a_readme_without_markers_is_an_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(DocsError, match=r"README\.md has no"):
        updated_readme("no markers here", "table", tmp_path / "README.md")


@pytest.mark.parametrize("root", ROOTS, ids=["stack", "bootstrap"])
def test_each_root_has_a_tfvars_example_and_a_readme_with_cost_and_destroy(root: Path) -> None:
    assert (root / "terraform.tfvars.example").is_file()
    readme = (root / "README.md").read_text(encoding="utf-8")
    for heading in ("## Cost", "## Destroy"):
        assert any(line.startswith(heading) for line in readme.splitlines()), f"{root.name}/README.md lacks {heading}"
