"""Pull-request preview training (CML's loop): train briefly on the runner, compare with the base branch.

The steps of `.github/workflows/preview.yml` (with `PYTHONPATH=scripts:trainer/src`: the comment's
chart is drawn by trainer.chart, the run report's own look, which needs only the standard library):

    python3 -m ci.preview train --trainer-src pr/trainer/src --python .venv/bin/python --output pr
    python3 -m ci.preview train --trainer-src base/trainer/src --python .venv/bin/python --output base
    python3 -m ci.preview champion --bucket pushtrain-artifacts-… --model-name cifar10   # when readable
    PREVIEW_PR=… PREVIEW_BASE=… PREVIEW_CHAMPION=… python3 -m ci.preview comment --repository owner/repo \\
        --pr 42 --pr-sha … --base-sha …

`train` runs the same short, fixed recipe (RECIPE below: the small CNN, 3 epochs, 2,000 generated
images from `python -m trainer synth`, seed 0, one CPU runner) with one checkout's trainer and
exports its headline numbers to $GITHUB_OUTPUT as one line of JSON; a run that fails or passes its
time cap is exported as failed with the end of its log, so the comment still says what happened.
`champion` exports the deployed champion when the job could read it. The numbers measure the code
and recipe change on generated data, not CIFAR-10 accuracy.

`comment` renders the PR's numbers against the base's (and the deployed champion's, when the
workflow could read it) and upserts one sticky comment on the pull request (ci.comments): every
push updates the same comment.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trainer.chart import mermaid_chart, series_legend

from ci.comments import upsert_comment
from ci.github import CIError, annotate_error, json_object, write_output
from ci.runs import read_text

MARKER = "<!-- pushtrain:preview -->"
# Fixed, so the PR and its base train exactly the same thing; small, so both fit a few minutes.
RECIPE = {"model": "cnn", "epochs": "3", "batch-size": "64", "lr": "0.05", "seed": "0", "threads": "0"}
SYNTH = {"train": "2000", "test": "500", "seed": "0"}
RUN_TIMEOUT_S = 8 * 60  # per checkout; the job's timeout-minutes covers both and the install
LOG_TAIL = 1500  # characters of a failed run's log kept for the comment


def _run(python: str, trainer_src: Path, args: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("TRAINER_", "AWS_"))}}
    env["PYTHONPATH"] = str(trainer_src)
    return subprocess.run(
        [python, "-m", "trainer", *args], env=env, capture_output=True, text=True, check=False, timeout=timeout_s
    )


def summarize(store: Path) -> dict[str, Any]:
    """Headline numbers of the one version the preview run published."""
    manifests = sorted(store.glob("models/*/*/manifest.json"))
    if len(manifests) != 1:
        raise CIError(f"expected one published version under {store}, found {len(manifests)}")
    manifest = json.loads(manifests[0].read_text())
    metrics = json.loads((manifests[0].parent / "metrics.json").read_text())
    return {
        "ok": True,
        "accuracy": float(metrics["accuracy"]),
        "loss": float(metrics["loss"]),
        "test_accuracy_by_epoch": [float(e["test_accuracy"]) for e in metrics["epochs"]],
        "wall_seconds": float(manifest["wall_seconds"]),
        "images_per_s": float(manifest["throughput"]["images_per_s"]),
        "parameters": manifest.get("parameters"),
    }


def train(python: str, trainer_src: Path, timeout_s: float = RUN_TIMEOUT_S) -> dict[str, Any]:
    """The preview recipe with this checkout's trainer; its numbers, or {"ok": False, "error": …}."""
    with tempfile.TemporaryDirectory(prefix="pushtrain-preview-", dir=os.environ.get("RUNNER_TEMP")) as tmp:
        root = Path(tmp)
        synth = [f"--{k}={v}" for k, v in SYNTH.items()]
        steps = [
            ["synth", "--out", str(root / "data"), *synth],
            [
                "train", *(f"--{k}={v}" for k, v in RECIPE.items()), "--data-uri", str(root / "data"),
                "--store-uri", str(root / "store"), "--work-dir", str(root / "work"), "--progress", "none",
                "--accuracy-floor", "0", "--run-id", "preview",
            ],
        ]  # fmt: skip
        for args in steps:
            try:
                result = _run(python, trainer_src, args, timeout_s)
            except subprocess.TimeoutExpired:
                return {"ok": False, "error": f"`trainer {args[0]}` passed its {timeout_s / 60:.0f}-minute cap"}
            if result.returncode != 0:
                log = (result.stderr or result.stdout)[-LOG_TAIL:]
                return {"ok": False, "error": f"`trainer {args[0]}` exited {result.returncode}:\n{log}"}
        return summarize(root / "store")


# --- the comment ---------------------------------------------------------------------------------


def _pct(value: float) -> str:
    return f"{100 * value:.2f} %"


def _chart(pr: Mapping[str, Any], base: Mapping[str, Any]) -> list[str]:
    """The PR's and the base's test accuracy by epoch, drawn like the run report (trainer.chart)."""
    series = [
        (name, [100 * v for v in r["test_accuracy_by_epoch"]])
        for name, r in (("this PR", pr), ("base", base))
        if r.get("ok")
    ]
    if not series or len({len(values) for _, values in series}) != 1:
        return []
    bands = [str(i) for i in range(1, len(series[0][1]) + 1)]
    return [
        f"Test accuracy (%) by epoch: {series_legend([name for name, _ in series])}.",
        "",
        mermaid_chart(bands, series, title="test accuracy (%) by epoch: this PR and its base", y_title="accuracy (%)"),
    ]


def _rows(pr: Mapping[str, Any], base: Mapping[str, Any]) -> list[str]:
    """Table rows: test accuracy, loss, wall time and throughput of the PR, the base and the change."""
    known = bool(base.get("ok"))

    def row(label: str, mine: str, theirs: str, change: str) -> str:
        return f"| {label} | {mine} | {theirs if known else '—'} | {change if known else '—'} |"

    b = base if known else pr  # placeholders below are never shown when the base failed
    return [
        row(
            "test accuracy",
            _pct(pr["accuracy"]),
            _pct(b["accuracy"]),
            f"{100 * (pr['accuracy'] - b['accuracy']):+.2f} pp",
        ),
        row("test loss", f"{pr['loss']:.4f}", f"{b['loss']:.4f}", f"{pr['loss'] - b['loss']:+.4f}"),
        row(
            "wall time",
            f"{pr['wall_seconds']:.0f} s",
            f"{b['wall_seconds']:.0f} s",
            f"{pr['wall_seconds'] - b['wall_seconds']:+.0f} s",
        ),
        row(
            "throughput",
            f"{pr['images_per_s']:.0f} images/s",
            f"{b['images_per_s']:.0f} images/s",
            f"{100 * (pr['images_per_s'] / b['images_per_s'] - 1):+.0f} %" if b["images_per_s"] else "—",
        ),
    ]


def render(
    pr: Mapping[str, Any],
    base: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    *,
    pr_sha: str,
    base_sha: str,
) -> str:
    recipe = ", ".join(f"{k} {v}" for k, v in RECIPE.items() if k != "threads")
    lines = [
        MARKER,
        "## Preview training",
        "",
        f"The same short CPU run for this PR (`{pr_sha[:12]}`) and its base (`{base_sha[:12]}`): {recipe}, "
        f"on {SYNTH['train']} generated images (`trainer synth`), tested on {SYNTH['test']}. It measures the "
        "change in code and recipe, not CIFAR-10 accuracy.",
        "",
    ]
    failed = [(name, r) for name, r in (("this PR", pr), ("base", base)) if not r.get("ok")]
    if pr.get("ok"):
        lines += [
            "| | this PR | base | change |",
            "| --- | ---: | ---: | ---: |",
            *_rows(pr, base),
            "",
            *_chart(pr, base),
        ]
    for name, result in failed:
        lines += ["", f"**The {name} run failed:**", "", "```text", str(result.get("error", "")).strip(), "```"]
    lines.append("")
    if champion:
        lines.append(
            f"Deployed champion: `{champion.get('version')}` at {_pct(float(champion['accuracy']))} on real CIFAR-10 "
            "(trained with the full recipe; not comparable with the numbers above, shown for scale)."
        )
    else:
        lines.append("Deployed champion: not readable from this workflow (no stack yet, or no read access).")
    lines += ["", "<sub>Updated on every push to this pull request by the preview workflow.</sub>", ""]
    return "\n".join(lines)


def _result(text: str | None, what: str) -> dict[str, Any] | None:
    """A result (or champion) passed as JSON text between jobs; None when empty."""
    if not text or not text.strip():
        return None
    return json_object(text, what)


def read_champion(bucket: str, model_name: str) -> dict[str, Any] | None:
    """{version, accuracy} of the deployed champion, or None when it cannot be read (no stack, no access)."""
    try:
        text = read_text(bucket, f"models/{model_name}/champion.json")
        record = _result(text, "champion.json")
    except CIError as error:
        print(f"champion not readable: {error}")
        return None
    if record is None or "version" not in record or "accuracy" not in record:
        return None
    return {"version": str(record["version"]), "accuracy": float(record["accuracy"])}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m ci.preview", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="run the preview recipe with one checkout's trainer")
    p_train.add_argument("--trainer-src", required=True, help="that checkout's trainer/src")
    p_train.add_argument("--python", required=True, help="the Python with torch installed")
    p_train.add_argument("--output", required=True, help="the $GITHUB_OUTPUT name for the result (one line of JSON)")
    p_train.add_argument("--timeout-minutes", type=float, default=RUN_TIMEOUT_S / 60)
    p_champion = sub.add_parser("champion", help="export the deployed champion (output `champion`), if readable")
    p_champion.add_argument("--bucket", required=True, help="artifacts bucket")
    p_champion.add_argument("--model-name", required=True, help="the stack's model_name")
    p_comment = sub.add_parser(
        "comment", help="upsert the sticky comment; results from env PREVIEW_PR, PREVIEW_BASE, PREVIEW_CHAMPION"
    )
    p_comment.add_argument("--repository", required=True, help="owner/name")
    p_comment.add_argument("--pr", type=int, required=True, help="pull request number")
    p_comment.add_argument("--pr-sha", required=True)
    p_comment.add_argument("--base-sha", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            result = train(args.python, Path(args.trainer_src), args.timeout_minutes * 60)
            print(json.dumps(result, indent=2))
            write_output(args.output, json.dumps(result, separators=(",", ":")))
            return 0  # a failed run is reported in the comment, not by failing this step
        if args.command == "champion":
            champion = read_champion(args.bucket, args.model_name)
            write_output("champion", json.dumps(champion, separators=(",", ":")) if champion else "")
            return 0
        missing = {"ok": False, "error": "no result: the training step did not finish"}
        pr = _result(os.environ.get("PREVIEW_PR"), "the PR's result") or missing
        base = _result(os.environ.get("PREVIEW_BASE"), "the base's result") or missing
        champion = _result(os.environ.get("PREVIEW_CHAMPION"), "the champion")
        text = render(pr, base, champion, pr_sha=args.pr_sha, base_sha=args.base_sha)
        print(upsert_comment(args.repository, args.pr, MARKER, text), "the preview comment")
        if not pr.get("ok"):
            print("::error title=preview::the pull request's preview training failed (see the comment)")
            return 1
    except CIError as error:
        return annotate_error("preview", error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
