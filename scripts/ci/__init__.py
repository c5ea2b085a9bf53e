"""Logic behind the composite actions and workflows in `.github/` that grew past a short shell script.

Each module runs with the runner's own `python3` and the standard library alone (no pip install
in CI before it runs), reads its inputs from the environment the way a workflow step passes
them, and talks to GitHub and AWS only through the `gh` and `aws` command-line tools, so the
tests can put recording fakes of those tools on PATH (see `tests/fakebin.py`).
"""
