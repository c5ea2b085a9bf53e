"""The trainer's configuration: one frozen dataclass, every setting with its documented default.

Settings come from three places, later ones winning:

1. the defaults below; the training recipe (epochs, batch size, lr, ...) defaults to the chosen
   model's recipe in the registry (`trainer.catalog.MODELS`, summarized here as `RECIPES`);
2. environment variables `TRAINER_<FIELD>` (how ECS container overrides reach the trainer);
3. command-line flags `--<field>` (dashes or underscores: `--batch-size` and `--batch_size`).

An unknown `TRAINER_*` variable, an unknown flag, a value of the wrong type or an invalid value raises
`ConfigError` naming the setting; the CLI turns it into exit code 2 (docs/contracts.md). Nothing here
imports torch (the registry is `trainer.catalog`): a bad setting exits 2 before torch loads.

A `TrainConfig` always holds concrete values: the recipe is applied when it is built, so code that
trains reads `config.lr` as a float, never None.

    >>> cfg = load_config(["--model", "cnn", "--epochs", "3"], {"TRAINER_SEED": "7"})
    >>> (cfg.model, cfg.epochs, cfg.seed, cfg.lr)
    ('cnn', 3.0, 7, 0.05)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from trainer import catalog
from trainer.counts import decimal_text, parse_decimal
from trainer.notify import TOPIC_ARN
from trainer.store import DEFAULT_STORE_URI
from trainer.versions import DEFAULT_MODEL_NAME

ENV_PREFIX = "TRAINER_"

MODELS = tuple(catalog.MODELS)  # the registered model names (trainer.catalog.MODELS)
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
PROGRESS_MODES = ("auto", "bar", "json", "none")

# --- the training recipes --------------------------------------------------------------------------
# Recipe settings left unset (or set to "auto") take the chosen model's value from its registry entry
# (trainer.catalog.MODELS, where each recipe's sources are) when the configuration is built, so the
# resolved (logged, saved) configuration always holds concrete numbers.
RECIPE_FIELDS = tuple(f.name for f in fields(catalog.Recipe))
RECIPES: dict[str, dict[str, Any]] = {name: dataclasses.asdict(entry.recipe) for name, entry in catalog.MODELS.items()}


class _FromRecipe:
    """The default of a recipe setting: replaced by the chosen model's value when a TrainConfig is built."""

    def __repr__(self) -> str:
        return "recipe"


FROM_RECIPE: Any = _FromRecipe()

# --- what defines a run ----------------------------------------------------------------------------
# The settings that decide what a run trains and publishes. Every attempt of one run must agree on
# them (a checkpoint made under other values is not resumed), a local run id is a hash of them (so
# rerunning the same command resumes or finds the same run), and a run record the trainer creates
# lists them as its params. The rest (where it runs, where it writes, the gate, the attempt) may
# differ between attempts: a resumed Spot task can land on other hardware.
RUN_FIELDS = (
    "model",
    *RECIPE_FIELDS,
    "seed",
    "tta",
    "data_uri",
    "limit_train",
    "limit_test",
    "val_images",
    "model_name",
)


# The gate's thresholds: decimal strings, parsed exactly (trainer.counts.parse_decimal), never as floats.
EXACT_FIELDS = ("accuracy_floor", "champion_margin")

# Bounds: every number is finite and within what a run can use; a value outside them is a typo or an
# attack on the bill, refused (exit 2) before anything is downloaded.
MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 65536
MAX_LR = 100.0  # mean-loss SGD; the recipes use 0.05-1.5
MAX_WEIGHT_DECAY = 1.0
MAX_SEED = 2**31 - 1  # the trigger accepts integer parameters within ±(2**31 - 1) (trigger.events.MAX_INT_PARAM)
MAX_THREADS = 1024
MAX_IMAGES = 10_000_000  # limit_train / limit_test
MAX_ATTEMPT = 10_000
MAX_COST_PER_HOUR = 1000.0  # USD
MAX_ETA = 16  # ASHA's reduction factor: 2-4 in the literature (Li et al. 2020 use 4; Ray Tune's default 4)


def bounds(
    low: float, high: float, *, low_open: bool = False, high_open: bool = False, request: str | None = None
) -> dict[str, Any]:
    """A field's metadata: the interval `validate` enforces, and (`request`: "integer", "number") the JSON
    type a retrain request may set it as. The trigger's parameter schema is generated from these
    (`python scripts/gen_param_schema.py` -> lambda/src/trigger/params.schema.json), so the trigger
    refuses, before anything is written or started, every value the trainer would refuse."""
    metadata: dict[str, Any] = {"range": (low, high, low_open, high_open)}
    return metadata | ({"request": request} if request else {})


class ConfigError(ValueError):
    """An invalid setting. `setting` is the field name; the message names the setting and the value."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"invalid setting {setting!r}: {message}")
        self.setting = setting


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of the trainer, with its default. See the module docstring for how they are set."""

    # 1. what to train (`bounds`: the interval validate() enforces, and what a retrain request may set)
    # "airbench" (default, ~2 M parameters) or "cnn" (the seed's small CNN)
    model: str = field(default="airbench", metadata={"request": "string", "choices": MODELS})
    # passes over the training set, a fraction stops the last early; recipe: 9.9 / 10
    epochs: float = field(default=FROM_RECIPE, metadata=bounds(0, MAX_EPOCHS, low_open=True, request="integer"))
    # training batch; default: recipe (airbench 1024, cnn 256)
    batch_size: int = field(default=FROM_RECIPE, metadata=bounds(1, MAX_BATCH_SIZE, request="integer"))
    # peak SGD learning rate for a mean loss; default: recipe (airbench 1.5, cnn 0.05)
    lr: float = field(default=FROM_RECIPE, metadata=bounds(0, MAX_LR, low_open=True, request="number"))
    # Nesterov momentum; default: recipe (airbench 0.85, cnn 0.9)
    momentum: float = field(default=FROM_RECIPE, metadata=bounds(0, 1, high_open=True))
    # SGD weight decay (airbench: all trainable; cnn: weights only); recipe
    weight_decay: float = field(default=FROM_RECIPE, metadata=bounds(0, MAX_WEIGHT_DECAY, request="number"))
    # cross-entropy label smoothing; default: recipe (0.2 / 0.1)
    label_smoothing: float = field(default=FROM_RECIPE, metadata=bounds(0, 1, high_open=True, request="number"))
    # fraction of all steps warming up, then linear decay (airbench: to 0.07 x peak)
    warmup: float = field(default=FROM_RECIPE, metadata=bounds(0, 1, high_open=True))
    # seeds weights, data order and augmentation (each epoch's order is a function of seed, epoch)
    seed: int = field(default=0, metadata=bounds(-MAX_SEED, MAX_SEED, request="integer"))
    tta: bool = True  # final evaluation with test-time augmentation (airbench: mirror + translate; cnn: mirror)

    # 2. where it runs
    precision: str = "auto"  # "auto": bf16 autocast on CPUs with native bf16 (avx512_bf16/amx) and on CUDA
    threads: int = 0  # torch intra-op threads; 0: the container's CPU quota (cgroup cpu.max), else the CPU count
    device: str = "auto"  # "auto" (CUDA when present), "cpu" or "cuda"
    progress: str = "auto"  # "auto" (a bar on a terminal, JSON lines otherwise), "bar", "json" or "none"

    # 3. data and artifacts
    data_uri: str = ".pushtrain/data"  # folder holding cifar-10-batches-py/ (or the .tar.gz; a path or file:///),
    #                                    s3://bucket/key/cifar-10-python.tar.gz, or "download" (torchvision)
    work_dir: str = ".pushtrain/work"  # the only place the trainer writes locally (dataset cache, scratch)
    store_uri: str = DEFAULT_STORE_URI  # artifact store: a local folder (path or file:///path) or s3://bucket[/prefix]
    model_name: str = DEFAULT_MODEL_NAME  # models/<model_name>/<version>/ in the store
    limit_train: int = 0  # use only the first N training images (0: all); for quick runs
    limit_test: int = 0  # use only the first N test images (0: all)
    val_images: int = 0  # hold out N training images as a validation set (0: off); the same N for every
    #                      seed (trainer.data.split_validation); sweep runs select on it, never on the test set

    # 4. run identity and provenance (set by the trigger)
    run_id: str = ""  # "": derive a local run id from the configuration
    attempt: int = 1  # 1 for the first start, 2, 3, ... for resumed attempts
    image_digest: str = ""  # sha256:... of the container image that runs this
    git_sha: str = ""  # commit the image was built from, when known

    # 5. sweeps (set by the trigger for the runs of a sweep; docs/contracts.md)
    sweep_id: str = ""  # this run belongs to sweep <id>: its version is published, never promoted, and its
    #                     validation counts at each rung go to sweeps/<id>/rungs/ in the store
    early_stop_eta: int = 0  # ASHA: 0 off, else keep training past a rung only in the top 1/eta (trainer.asha)

    # 6. the quality gate
    # Decimal strings, compared exactly with the version's correct/total counts (trainer.counts): "0.9" is
    # 9/10, never the binary float 0.9000000000000000222.
    accuracy_floor: str = "0.5"  # promote to champion only at or above this test accuracy (0..1)
    champion_margin: str = "0"  # ... and only when at least (champion accuracy + margin)
    cost_per_hour: float = 0.0987  # USD per task-hour for cost estimates: Fargate on-demand, 2 vCPU + 4 GiB,
    #                                us-east-1 (0.04048 per vCPU-hour, 0.004445 per GB-hour), Nov 2025

    # 7. telling people
    notify_topic_arn: str = ""  # SNS topic for a short message when a run succeeds ("": none); set by Terraform

    def __post_init__(self) -> None:
        """Apply the chosen model's recipe to the recipe settings left at their default."""
        entry = catalog.MODELS.get(self.model)
        if entry is None:
            raise ConfigError("model", f"unknown model {self.model!r} (choose one of {', '.join(catalog.MODELS)})")
        for name in RECIPE_FIELDS:
            if getattr(self, name) is FROM_RECIPE:
                object.__setattr__(self, name, getattr(entry.recipe, name))  # frozen: only while being built
        for name in EXACT_FIELDS:  # a number from a Python caller or an older saved configuration: its decimal text
            value = getattr(self, name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                try:
                    object.__setattr__(self, name, decimal_text(value, name))
                except ValueError as exc:
                    raise ConfigError(name, str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every setting (the resolved configuration saved with the model)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Rebuild a configuration saved with `to_dict` (an unknown key or invalid value raises ConfigError)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown setting in saved configuration (known: {', '.join(sorted(known))})")
        checked: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in values:
                checked[f.name] = _check_type(f.name, values[f.name], _field_types()[f.name])
        return validate(cls(**checked))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some settings changed, validated again."""
        return validate(dataclasses.replace(self, **changes))

    def run_differences(self, saved: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
        """(name, saved value, this run's value) for each of RUN_FIELDS where `saved` (a to_dict) differs.

        The one resume check: a checkpoint or training state is resumed only when this is empty.
        """
        return [
            (name, saved.get(name), getattr(self, name))
            for name in RUN_FIELDS
            if saved.get(name) != getattr(self, name)
        ]


def local_run_id(config: TrainConfig) -> str:
    """`local-` + a hash of the settings that define the run (used when no run id is configured).

    Rerunning the same command resumes (or finds finished) the same run, as a duplicate push event does in AWS.
    """
    values = {name: getattr(config, name) for name in RUN_FIELDS}
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()
    return f"local-{digest[:20]}"


# --- parsing ----------------------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _parse(name: str, raw: str, kind: Any) -> Any:
    text = raw.strip()
    if name in RECIPE_FIELDS and text.lower() in {"", "auto", "none"}:
        return FROM_RECIPE
    if kind is bool:
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ConfigError(name, f"expected a boolean (true/false, 1/0, yes/no, on/off), got {raw!r}")
    try:
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        raise ConfigError(name, f"expected {kind.__name__}, got {raw!r}") from None
    return raw


def _check_type(name: str, value: Any, kind: Any) -> Any:
    if value is None and name in RECIPE_FIELDS:
        return FROM_RECIPE  # a saved configuration from before recipes were always applied
    if name in EXACT_FIELDS and isinstance(value, int | float) and not isinstance(value, bool):
        return value  # saved before thresholds were decimal strings: __post_init__ takes its decimal text
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not kind:
        raise ConfigError(name, f"expected {kind.__name__}, got {value!r}")
    return value


def _env_overrides(environ: Mapping[str, str], names: set[str]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in names:
            raise ConfigError(key, f"unknown trainer setting (known: {', '.join(sorted(names))})")
        overrides[name] = value
    return overrides


def _cli_overrides(argv: Sequence[str], names: set[str]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(arg, "unexpected argument: settings are given as --name value or --name=value")
        flag, eq, value = arg[2:].partition("=")
        name = flag.replace("-", "_")
        if name not in names:
            raise ConfigError(
                f"--{flag}", f"unknown flag (known: {', '.join('--' + n.replace('_', '-') for n in sorted(names))})"
            )
        if not eq:
            if i + 1 >= len(args):
                raise ConfigError(name, f"--{flag} needs a value")
            i += 1
            value = args[i]
        overrides[name] = value
        i += 1
    return overrides


def load_config(argv: Sequence[str] | None, environ: Mapping[str, str]) -> TrainConfig:
    """Defaults, then `TRAINER_*` from `environ`, then `--flags` from `argv`; resolved and validated."""
    types_ = _field_types()
    names = set(types_)
    values: dict[str, Any] = {}
    for source in (_env_overrides(environ, names), _cli_overrides(argv or [], names)):
        for name, raw in source.items():
            values[name] = _parse(name, raw, types_[name])
    return validate(TrainConfig(**values))


# --- validation -------------------------------------------------------------------------------------

# Patterns match whole strings (fullmatch): a trailing newline is not part of a valid value.
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_GIT_SHA = re.compile(r"[0-9a-fA-F]{7,40}")
_URI_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")  # any "scheme:" prefix, with or without "//"

_SWEEP_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")  # one key segment: sweeps/<sweep_id>/...


def is_valid_run_id(run_id: str) -> bool:
    """Whether run_id can name a run (one key segment: runs/<run_id>/...); the configuration's own check."""
    return bool(_RUN_ID.fullmatch(run_id)) and ".." not in run_id


def parse_s3_uri(uri: str, setting: str, *, key_required: bool) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key); a malformed URI raises ConfigError naming `setting`."""
    if not uri.startswith("s3://"):
        raise ConfigError(setting, f"expected s3://bucket/..., got {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not _S3_BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ConfigError(setting, f"malformed S3 URI {uri!r}: {bucket!r} is not a valid bucket name")
    if key_required and (not key or key.endswith("/")):
        raise ConfigError(setting, f"malformed S3 URI {uri!r}: expected s3://bucket/path/to/object")
    if "//" in key or any(part in {".", ".."} for part in key.split("/")):
        raise ConfigError(setting, f"malformed S3 URI {uri!r}: empty or relative path segment")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in uri):
        raise ConfigError(setting, f"malformed S3 URI {uri!r}: control character")
    return bucket, key.strip("/")


def _check_location(setting: str, uri: str, *, allow_download: bool, key_required: bool) -> None:
    if not uri.strip():
        raise ConfigError(setting, "must not be empty")
    if allow_download and uri == "download":
        return
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in uri):
        raise ConfigError(setting, f"malformed location {uri!r}: control character")
    scheme = _URI_SCHEME.match(uri)
    if not scheme:
        return
    if scheme.group(1) == "file":
        if not uri.startswith("file:///") or uri == "file:///":
            raise ConfigError(setting, f"malformed URI {uri!r}: want file:///absolute/path")
        return
    if scheme.group(1) != "s3" or not uri.startswith("s3://"):
        raise ConfigError(setting, f"malformed URI {uri!r}: want s3://bucket/..., file:///path or a local path")
    parse_s3_uri(uri, setting, key_required=key_required)


def local_path(uri: str) -> str:
    """The path of a local location given as a path or a file:///path URI."""
    return uri[len("file://") :] if uri.startswith("file:///") else uri


def _require(ok: bool, setting: str, message: str) -> None:
    if not ok:
        raise ConfigError(setting, message)


def _bounded(
    setting: str, value: float, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> None:
    """value must be finite and within [low, high] (or open at either end): NaN and infinity never pass."""
    inside = (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
    if not (math.isfinite(value) and inside):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(setting, f"must be a finite number in {interval}, got {value!r}")


def validate(config: TrainConfig) -> TrainConfig:
    """Check every value (types are already right); raise ConfigError naming the first bad setting."""
    c = config
    registered = ", ".join(catalog.MODELS)
    _require(c.model in catalog.MODELS, "model", f"unknown model {c.model!r} (choose one of {registered})")
    for f in fields(c):  # the recipe and the seed: the intervals their field metadata holds (`bounds`)
        if "range" in f.metadata:
            low, high, low_open, high_open = f.metadata["range"]
            _bounded(f.name, getattr(c, f.name), low, high, low_open=low_open, high_open=high_open)
    _require(c.precision in PRECISIONS, "precision", f"unknown precision {c.precision!r} (one of {PRECISIONS})")
    _bounded("threads", c.threads, 0, MAX_THREADS)
    _require(c.device in DEVICES, "device", f"unknown device {c.device!r} (one of {DEVICES})")
    _require(
        c.progress in PROGRESS_MODES, "progress", f"unknown progress mode {c.progress!r} (one of {PROGRESS_MODES})"
    )
    _check_location("data_uri", c.data_uri, allow_download=True, key_required=True)
    _check_location("store_uri", c.store_uri, allow_download=False, key_required=False)
    _require(bool(c.work_dir.strip()), "work_dir", "must not be empty")
    _require(not _URI_SCHEME.match(c.work_dir), "work_dir", f"must be a local folder, got {c.work_dir!r}")
    _check_location("work_dir", c.work_dir, allow_download=False, key_required=False)
    _require(
        bool(_MODEL_NAME.fullmatch(c.model_name)),
        "model_name",
        f"expected [a-z0-9][a-z0-9._-]*, got {c.model_name!r}",
    )
    _bounded("limit_train", c.limit_train, 0, MAX_IMAGES)
    _bounded("limit_test", c.limit_test, 0, MAX_IMAGES)
    _bounded("val_images", c.val_images, 0, MAX_IMAGES)
    _require(
        c.sweep_id == "" or (bool(_SWEEP_ID.fullmatch(c.sweep_id)) and ".." not in c.sweep_id),
        "sweep_id",
        f"expected [A-Za-z0-9._-] (no '..', at most 64), got {c.sweep_id!r}",
    )
    _require(
        c.early_stop_eta == 0 or 2 <= c.early_stop_eta <= MAX_ETA,
        "early_stop_eta",
        f"must be 0 (off) or 2 to {MAX_ETA}, got {c.early_stop_eta!r}",
    )
    _require(
        c.early_stop_eta == 0 or (bool(c.sweep_id) and c.val_images > 0),
        "early_stop_eta",
        "early stopping needs sweep_id (where the rung results go) and val_images > 0 (what they measure)",
    )
    _require(
        c.run_id == "" or is_valid_run_id(c.run_id), "run_id", f"expected [A-Za-z0-9._-] (no '..'), got {c.run_id!r}"
    )
    _bounded("attempt", c.attempt, 1, MAX_ATTEMPT)
    _require(
        c.image_digest == "" or bool(_DIGEST.fullmatch(c.image_digest)),
        "image_digest",
        f"expected sha256:<64 hex>, got {c.image_digest!r}",
    )
    _require(c.git_sha == "" or bool(_GIT_SHA.fullmatch(c.git_sha)), "git_sha", f"expected 7-40 hex, got {c.git_sha!r}")
    for name in EXACT_FIELDS:
        try:
            exact = parse_decimal(getattr(c, name), name)
        except ValueError as exc:
            raise ConfigError(name, str(exc)) from None
        _require(0 <= exact <= 1, name, f"must be in [0, 1], got {getattr(c, name)!r}")
    _bounded("cost_per_hour", c.cost_per_hour, 0, MAX_COST_PER_HOUR)
    _require(
        c.notify_topic_arn == "" or bool(TOPIC_ARN.fullmatch(c.notify_topic_arn)),
        "notify_topic_arn",
        f"expected arn:aws:sns:<region>:<account>:<topic> or empty, got {c.notify_topic_arn!r}",
    )
    return config


def check_against_dataset(config: TrainConfig, n_train: int) -> None:
    """Checks that need the dataset's size (known only once it is loaded): the batch must fit in it."""
    if config.batch_size > n_train:
        raise ConfigError("batch_size", f"{config.batch_size} is larger than the training set ({n_train} images)")


def request_schema() -> dict[str, Any]:
    """The parameters a retrain request may set, with the types and intervals the trainer accepts: the
    trigger's parameter schema (docs/contracts.md), generated from the field metadata (`bounds`)."""
    params: dict[str, Any] = {}
    for f in fields(TrainConfig):
        kind = f.metadata.get("request")
        if kind is None:
            continue
        entry: dict[str, Any] = {"type": kind}
        if "choices" in f.metadata:
            entry["enum"] = list(f.metadata["choices"])
        if "range" in f.metadata:
            low, high, low_open, high_open = f.metadata["range"]
            entry["exclusiveMinimum" if low_open else "minimum"] = low
            entry["exclusiveMaximum" if high_open else "maximum"] = high
        params[f.name] = entry
    return {
        "$comment": "generated from trainer/src/trainer/config.py (TrainConfig field metadata) by "
        "`python scripts/gen_param_schema.py`; do not edit",
        "schema": 1,
        "params": params,
    }


def settings_help() -> str:
    """One line per setting: flag, environment variable and default (for `--help`)."""
    lines = []
    for f in fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else "?"
        shown = repr(default)
        lines.append(f"  --{f.name.replace('_', '-'):<18} {ENV_PREFIX + f.name.upper():<26} default {shown}")
    return "\n".join(lines)


__all__ = [
    "MAX_SEED",
    "MODELS",
    "RECIPES",
    "RUN_FIELDS",
    "ConfigError",
    "TrainConfig",
    "check_against_dataset",
    "is_valid_run_id",
    "load_config",
    "local_run_id",
    "parse_s3_uri",
    "settings_help",
]
