"""params.yaml → one frozen, typed view; and the one place that knows where files live.

``params.yaml`` is the only source of defaults: a field's default here equals its value there
(``tests/test_config.py`` checks every field), so code that builds a config by hand gets the
same knobs as a run. The environment is read in :mod:`pipeline.settings` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.columns import Feast
from pipeline.errors import ConfigError
from pipeline.settings import settings


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LoaderParams(_Frozen):
    """How a file maps onto the canonical event table; a preset brings defaults for all."""

    preset: Literal["generic", "movielens", "ecommerce"] = "generic"
    format: Literal["auto", "csv", "tsv", "parquet"] = "auto"
    columns: dict[Literal["user_id", "item_id", "event_type", "event_timestamp", "value",
                          "category"], str] = {}
    events: dict[str, str] = {}
    time_unit: Literal["s", "ms", "iso", "none"] | None = None  # none: the file has no time
    event_type: str | None = None    # every row is this event type (no event column needed)


class IngestParams(_Frozen):
    source: Literal["synthetic", "landing", "movielens", "file"] = "synthetic"
    # the input: landing folder (landing), file (file), MovieLens folder or file (movielens);
    # a DVC dependency of ingest (dvc.yaml: ${ingest.path}), so never null
    path: str = Field("data/incoming", min_length=1)
    loader: LoaderParams = LoaderParams()


class AttributeTableParams(_Frozen):
    """One optional attribute table (items or users): a file and how its columns map."""

    path: str | None = None                     # csv/tsv/parquet; null = the source's own
    format: Literal["auto", "csv", "tsv", "parquet"] = "auto"
    id: str | None = None                       # the id column; null = item_id / user_id
    categorical: dict[str, str] = {}            # feature name -> source column
    numeric: dict[str, str] = {}
    multi: dict[str, str] = {}                  # multi-valued: split on ``separator``
    separator: str = Field("|", min_length=1)
    ranges: dict[str, tuple[float | None, float | None]] = {}   # numeric feature -> [lo, hi]


class AttributeParams(_Frozen):
    items: AttributeTableParams = AttributeTableParams()
    users: AttributeTableParams = AttributeTableParams()
    max_value_length: int = Field(200, gt=0)    # longer attribute values are quarantined


class SyntheticParams(_Frozen):
    seed: int = 42
    n_events: int = Field(300_000, gt=0)
    n_users: int = Field(5_000, gt=0)
    n_items: int = Field(12_000, gt=0)
    n_categories: int = Field(20, gt=0)
    days: int = Field(60, gt=0)
    end_date: date = date(2026, 10, 31)
    zipf_exponent: float = Field(1.1, gt=0)
    taste_concentration: float = Field(0.15, gt=0)
    explore_rate: float = Field(0.15, ge=0, le=1)
    play_share: float = Field(0.35, ge=0, le=1)
    new_user_share: float = Field(0.3, ge=0, le=1)
    new_item_share: float = Field(0.2, ge=0, le=1)
    n_countries: int = Field(8, gt=0)          # user attribute that shifts the category mix
    attribute_taste: float = Field(0.3, ge=0, le=1)  # share of a user's taste set by country + age


class WatchParams(_Frozen):
    strong_threshold: float = Field(0.9, ge=0, le=1)
    strong_bonus: float = 3.0
    abandon_threshold: float = Field(0.2, ge=0, le=1)
    abandon_penalty: float = -1.0


class RatingParams(_Frozen):
    neutral: float = 3.0
    per_star: float = Field(0.5, ge=0)


#: what an event's ``value`` means, one meaning per type (signals.value_kind)
ValueKind = Literal["fraction", "stars", "count"]


class SignalParams(_Frozen):
    weights: dict[str, float]
    value_kind: dict[str, ValueKind] = {"play": "fraction", "rating": "stars"}
    watch: WatchParams = WatchParams()
    rating: RatingParams = RatingParams()
    repeat_bonus: float = 0.5
    half_life_days: float | None = Field(None, gt=0)
    alpha: float = Field(1.0, gt=0)
    epsilon: float = Field(1.0, gt=0)


class ValidateParams(_Frozen):
    timestamp_floor: date = date(1995, 1, 1)
    max_quarantine_fraction: float = Field(0.1, ge=0, le=1)
    value_ranges: dict[str, tuple[float | None, float | None]] = {
        "play": (0.0, 1.0), "rating": (0.5, 5.0)}


class FeatureParams(_Frozen):
    windows_days: tuple[int, ...] = (7, 30)
    recent_items: int = Field(50, ge=0)
    repeatable_events: tuple[str, ...] = ()   # their items never enter the seen set
    top_categories: int = Field(3, ge=1)
    memory_limit: str = "2GB"
    threads: int = Field(2, gt=0)


class SplitParams(_Frozen):
    strategy: Literal["time", "leave_n_out"] = "time"
    test_days: int = Field(7, gt=0)
    n_out: int = Field(10, gt=0)
    seed: int = 42


#: the learned families that can compete with popularity (always there: the floor)
Family = Literal["lightfm", "als", "ease", "blend"]


class SearchParams(_Frozen):
    """The LightFM configurations the train stage tries on the validation slice (never the
    holdout): first the feature sets (``tokens`` × ``token_weight``) at the model's own
    hyperparameters, then the hyperparameter grid with the winning feature set. An empty list
    keeps ``model.<key>``. ``grid`` runs every combination in order, ``random`` a seeded draw
    of ``trials`` of them; no trial starts after ``budget_seconds`` of ``budget_clock``:
    ``cpu`` (this process's CPU time, the work done: on a shared machine the same search runs
    the same trials whatever the load) or ``wall``."""

    strategy: Literal["grid", "random"] = "grid"
    trials: int = Field(8, gt=0)
    seed: int = 42
    budget_seconds: float = Field(600.0, gt=0)
    budget_clock: Literal["cpu", "wall"] = "cpu"
    #: with more than one trial, each trial fits on the fit-part pairs of at most this many
    #: users (every scored validation user plus a seeded sample of the others; null = all), so
    #: a search on a large data set costs a fraction of full fits; the winner is then refitted
    #: on all of train, and serving's refit sees all the data
    sample_users: int | None = Field(50_000, gt=0)
    tokens: tuple[Literal["none", "users", "items", "all"], ...] = Field(
        ("none", "all"), min_length=1)
    token_weight: tuple[Annotated[float, Field(gt=0)], ...] = (0.25, 1.0)
    no_components: tuple[Annotated[int, Field(gt=0)], ...] = ()
    learning_rate: tuple[Annotated[float, Field(gt=0)], ...] = ()
    max_sampled: tuple[Annotated[int, Field(gt=0)], ...] = ()
    item_alpha: tuple[Annotated[float, Field(ge=0)], ...] = ()
    user_alpha: tuple[Annotated[float, Field(ge=0)], ...] = ()
    user_identity: tuple[bool, ...] = ()
    session_items: tuple[Annotated[int, Field(ge=0)], ...] = ()
    session_weight: tuple[Annotated[float, Field(gt=0)], ...] = ()
    short_history_share: tuple[Annotated[float, Field(ge=0, le=1)], ...] = ()
    item_identity_dropout: tuple[Annotated[float, Field(ge=0, lt=1)], ...] = ()


class ModelParams(_Frozen):
    no_components: int = Field(48, gt=0)
    loss: Literal["warp", "bpr", "warp-kos", "logistic"] = "warp"
    learning_rate: float = Field(0.05, gt=0)
    epochs: int = Field(20, gt=0)
    item_alpha: float = Field(0.0, ge=0)
    user_alpha: float = Field(0.0, ge=0)
    max_sampled: int = Field(30, gt=0)
    seed: int = 42
    num_threads: int = Field(2, gt=0)
    # any behaviour feature (built-in names or a feature column) or attribute; checked at train
    user_features: tuple[str, ...] = ("top_category", "activity", "recency")
    item_features: tuple[str, ...] = ("category", "popularity", "conversion")
    # and every attribute column the source's tables provide (train adds them to the lists
    # above, so the model's own config names them): MovieLens genres / year, synthetic
    # country / age band / brand / price
    attribute_features: bool = True
    buckets: int = Field(8, ge=2, le=64)      # numeric features: quantile buckets (train data)
    session_items: int = Field(10, ge=0)      # recent items (+ their tokens) as user tokens
    session_weight: float = Field(1.0, gt=0)  # the session tokens' total weight (identity 1)
    user_identity: bool = False               # false: users are their tokens only (as cold ones)
    cold_items: bool = True                   # catalogue items without interactions: tokens
    # train as cold users are served: a share of users also trains as a copy cut to its
    # 0..short_history_n oldest recent items (no identity; behaviour tokens of that history)
    short_history_share: float = Field(0.5, ge=0, le=1)
    short_history_n: int = Field(3, gt=0)
    # each epoch, this share of warm items trains without its identity (tokens only, as a
    # cold item is scored), so the item tokens learn to carry an item alone
    item_identity_dropout: float = Field(0.0, ge=0, lt=1)
    learning_schedule: Literal["adagrad", "adadelta"] = "adagrad"
    token_weight: float = Field(1.0, gt=0)   # feature tokens' total weight beside identity (1)
    # how confidence steers WARP: weight = sample_weight, sample = positives drawn each epoch
    # in proportion to it; both use confidence ** confidence_power (0 = binary, >1 = wider)
    confidence: Literal["weight", "sample"] = "weight"
    confidence_power: float = Field(1.0, ge=0, le=8)
    validation_days: int = Field(3, gt=0)     # time split: last N days of train = validation
    validation_n: int = Field(5, gt=0)        # leave_n_out split: N per user = validation
    validation_users: int | None = Field(20_000, gt=0)  # seeded sample scored per epoch/trial
    # and this many of them also scored as copies cut to 0..short_history_n oldest recent
    # items (cold users with revealed events), so validation judges settings on those too
    validation_short_users: int = Field(0, ge=0)
    patience: int = Field(3, gt=0)            # epochs without a better validation score
    refit: bool = True                        # refit on all of train for the best epoch count
    ensemble: int = Field(1, gt=0, le=16)     # N seeds averaged, served as one factor model
    families: tuple[Family, ...] = ("lightfm", "als", "ease")   # compete beside popularity
    search: SearchParams = SearchParams()


#: keys of ``model`` that choose between configurations rather than configure one LightFM
SELECTION_KEYS = frozenset({"families", "search"})


class ALSParams(_Frozen):
    factors: tuple[Annotated[int, Field(gt=0)], ...] = Field((32, 64), min_length=1)
    regularization: tuple[Annotated[float, Field(ge=0)], ...] = Field((0.01, 0.05), min_length=1)
    alpha: tuple[Annotated[float, Field(gt=0)], ...] = Field((1.0, 10.0), min_length=1)
    iterations: int = Field(15, gt=0)
    seed: int = 42
    num_threads: int = Field(2, gt=0)
    tune_users: int | None = Field(50_000, gt=0)   # grid trials fit on a seeded user sample


class EASEParams(_Frozen):
    regularization: tuple[Annotated[float, Field(gt=0)], ...] = Field((100.0, 500.0), min_length=1)
    max_items: int = Field(5000, gt=0)   # a dense items × items matrix: skipped above this


class BlendParams(_Frozen):
    """The blend family's weights: a simplex grid of this step over the tuned families."""

    step: float = Field(0.1, gt=0, le=0.5)


class BaselineParams(_Frozen):
    als: ALSParams = ALSParams()
    ease: EASEParams = EASEParams()
    blend: BlendParams = BlendParams()


class TargetParams(_Frozen):
    """Which holdout (and validation) pairs count as relevant; see pipeline.evaluation.target."""

    types: tuple[str, ...] = ()                # [] = every positive pair
    min_value: dict[str, float] = {}           # per listed type: the event's value reaches this
    min_net: float | None = None               # and/or: the pair's net signal reaches this


class EvaluateParams(_Frozen):
    k: int = Field(10, gt=0)
    target: TargetParams = TargetParams()
    reveal_n: int = Field(3, ge=0)            # cold users: first N holdout events pushed first
    memory_mb: int = Field(512, gt=0)        # budget of one batch's (users × items) scores
    auc_negatives: int = Field(1000, gt=0)   # sampled negatives per user (≥ items: exact)


class GateParams(_Frozen):
    confidence: float = Field(0.95, gt=0, lt=1)
    resamples: int = Field(2000, ge=100)
    seed: int = 42
    min_delta: float = 0.001
    max_recall_drop: float = Field(0.02, ge=0)
    max_coverage_drop: float = Field(0.05, ge=0)
    max_cold_drop: float = Field(0.02, ge=0)  # cold-with-revealed precision@k vs the champion


class ServingParams(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(8000, gt=0, lt=65536)
    default_k: int = Field(10, ge=1, le=100)
    max_k: int = Field(100, ge=1)
    max_batch: int = Field(256, ge=1)
    max_user_id_length: int = Field(128, ge=1)
    max_events_per_request: int = Field(1000, ge=1)
    reload_poll_seconds: float = Field(2.0, gt=0)
    exclude_seen: Literal["all", "recent", "none"] = "all"
    max_candidates: int = Field(10_000, ge=1)
    workers: int = Field(1, ge=1)
    worker_sessions: bool = False
    export_batch: int = Field(256, ge=1)
    blas_threads: int = Field(1, ge=1)
    cache_first: bool = False
    export_blas_threads: int = Field(1, ge=1)
    export_threads: int = Field(1, ge=1)


class Params(_Frozen):
    ingest: IngestParams = IngestParams()
    attributes: AttributeParams = AttributeParams()
    synthetic: SyntheticParams = SyntheticParams()
    signals: SignalParams
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    features: FeatureParams = FeatureParams()
    split: SplitParams = SplitParams()
    model: ModelParams = ModelParams()
    evaluate: EvaluateParams = EvaluateParams()
    baselines: BaselineParams = BaselineParams()
    gate: GateParams = GateParams()
    serving: ServingParams = ServingParams()

    @property
    def event_types(self) -> tuple[str, ...]:
        return tuple(self.signals.weights)

    def problems(self) -> list[tuple[str, str]]:
        """(key, what is wrong) for rules that span several keys; empty when consistent."""
        types = set(self.event_types)
        tg = self.evaluate.target
        out = [("evaluate.target.types", f"'{t}' is not an event type of signals.weights "
                 f"({', '.join(self.event_types)})") for t in tg.types if t not in types]
        for t, v in tg.min_value.items():
            if t not in tg.types:
                out.append((f"evaluate.target.min_value.{t}", f"'{t}' is not in evaluate.target.types"))
            elif self.signals.value_kind.get(t) == "fraction" and not 0 <= v <= 1:
                out.append((f"evaluate.target.min_value.{t}", f"a watch fraction is in [0, 1], got {v}"))
        for t, kind in self.signals.value_kind.items():
            lo, hi = self.validate_.value_ranges.get(t, (None, None))
            if kind == "count" and (hi is not None or lo is None or lo < 0):
                out.append((f"validate.value_ranges.{t}", f"signals.value_kind.{t} is count, so "
                            f"the range must be [0, null] (got [{lo}, {hi}]): a count is never "
                            "read as a watch fraction or stars"))
        if self.split.strategy == "time" and self.ingest.loader.time_unit == "none":
            out.append(("split.strategy", "the time split needs event times, but "
                        "ingest.loader.time_unit is none (the data has no timestamps); "
                        "use split.strategy: leave_n_out"))
        return out


def _describe(err: ValidationError, source: Path) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"] if p != "validate_") or "(top level)"
    key = key.replace("validate_", "validate")
    got = first.get("input")
    got_s = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{source}: key '{key}': {first['msg']}{got_s}. Fix params.yaml and run again."


def load_params(path: Path | None = None) -> Params:
    """Read and check params.yaml; a problem raises ConfigError naming the key."""
    path = path or paths().params
    if not path.exists():
        raise ConfigError(f"{path}: not found. Run from the project root or set RECFLOW_ROOT.")
    try:
        raw: Any = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where}: not valid YAML ({getattr(e, 'problem', e)}).") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of stage groups, got {type(raw).__name__}.")
    try:
        params = Params.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_describe(e, path)) from None
    for key, what in params.problems()[:1]:
        raise ConfigError(f"{path}: key '{key}': {what}. Fix params.yaml and run again.")
    return params


#: the file names inside an event folder (data/events/, data/validated/)
EVENTS_FILE = "events.parquet"
ITEMS_FILE = "items.parquet"
#: a validated attribute table (kind = items | users), beside the events
VALIDATED_ATTRIBUTES = "attributes_{kind}.parquet"
#: inside a model artifact / registered version: sorted uint64 fingerprints of the (user,
#: item) pairs it was fitted on (``pipeline.evaluation.splits.pair_fingerprint``)
TRAINED_PAIRS_FILE = "trained_pairs.npy"


@dataclass(frozen=True)
class Paths:
    """Every file location of the project, relative to one root: one property per artifact."""

    root: Path

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def dvc_lock(self) -> Path:
        return self.root / "dvc.lock"

    @cached_property
    def data(self) -> Path:
        return self.root / "data"

    # ---- ingest / validate --------------------------------------------------------------
    @property
    def incoming(self) -> Path:
        return self.data / "incoming"

    @property
    def events(self) -> Path:
        return self.data / "events"

    @property
    def events_file(self) -> Path:
        return self.events / EVENTS_FILE

    @property
    def events_items(self) -> Path:
        return self.events / ITEMS_FILE

    @property
    def manifest(self) -> Path:
        return self.events / "manifest.json"

    @property
    def attributes(self) -> Path:
        """Item / user attribute tables as ingest read them (``<kind>.parquet``)."""
        return self.data / "attributes"

    def validated_attributes(self, kind: str) -> Path:
        return self.validated / VALIDATED_ATTRIBUTES.format(kind=kind)

    @property
    def validated(self) -> Path:
        return self.data / "validated"

    @property
    def validated_events(self) -> Path:
        return self.validated / EVENTS_FILE

    @property
    def validated_items(self) -> Path:
        return self.validated / ITEMS_FILE

    @property
    def quarantine(self) -> Path:
        return self.data / "quarantine"

    @property
    def pushed(self) -> Path:
        return self.data / "pushed"

    # ---- features / Feast ---------------------------------------------------------------
    @property
    def feature_repo(self) -> Path:
        return self.root / "feature_repo"

    @property
    def feature_store_yaml(self) -> Path:
        return self.feature_repo / "feature_store.yaml"

    @property
    def feature_data(self) -> Path:
        return self.feature_repo / "data"

    @property
    def user_features(self) -> Path:
        return self.feature_data / Feast.user_file

    @property
    def item_features(self) -> Path:
        return self.feature_data / Feast.item_file

    def attribute_features(self, kind: str) -> Path:
        """The Feast file of the ``items`` / ``users`` attribute view."""
        return self.feature_data / (Feast.item_attr_file if kind == "items" else Feast.user_attr_file)

    @property
    def registry_db(self) -> Path:
        """Feast's registry (``registry:`` in feature_store.yaml)."""
        return self.feature_data / "registry.db"

    @property
    def online_db(self) -> Path:
        """The SQLite online store (``online_store.path`` in feature_store.yaml)."""
        return self.feature_data / "online_store.db"

    @property
    def materialized(self) -> Path:
        """The materialization record: what the online store was loaded with (a DVC out)."""
        return self.feature_data / "materialized.json"

    @property
    def online_state(self) -> Path:
        """Per online store, the fingerprints of what materialization wrote there."""
        return self.feature_data / "online_state"

    # ---- trainset (train → evaluate → promote) ------------------------------------------
    @property
    def trainset(self) -> Path:
        return self.data / "trainset"

    @property
    def train_pairs(self) -> Path:
        """All positives before the cutoff (what the served model is fitted on)."""
        return self.trainset / "train.parquet"

    @property
    def fit_pairs(self) -> Path:
        """``train_pairs`` minus the validation slice (early stopping, tuning)."""
        return self.trainset / "fit.parquet"

    @property
    def validation_pairs(self) -> Path:
        """The validation slice, carved once out of the training period."""
        return self.trainset / "validation.parquet"

    @property
    def holdout_pairs(self) -> Path:
        return self.trainset / "holdout.parquet"

    @property
    def train_user_features(self) -> Path:
        return self.trainset / "user_features.parquet"

    @property
    def train_item_features(self) -> Path:
        return self.trainset / "item_features.parquet"

    @property
    def trainset_meta(self) -> Path:
        return self.trainset / "meta.json"

    # ---- models -------------------------------------------------------------------------
    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def candidate(self) -> Path:
        return self.models / "candidate"

    @property
    def registry(self) -> Path:
        return self.models / "registry"

    @property
    def families(self) -> Path:
        """Each competing family's validation-chosen model, refitted on all of train."""
        return self.models / "families"

    def family_model(self, family: str) -> Path:
        return self.families / family

    # ---- reports, metrics, plots, logs --------------------------------------------------
    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def validation_report(self) -> Path:
        return self.reports / "validation.json"

    @property
    def validation_failed(self) -> Path:
        return self.reports / "validation_failed.json"

    @property
    def validation_docs(self) -> Path:
        return self.reports / "validation_docs"

    @property
    def materialize_report(self) -> Path:
        return self.reports / "materialize.json"

    @property
    def backfill_report(self) -> Path:
        return self.reports / "backfill.json"

    @property
    def model_search(self) -> Path:
        """Every trial of every family on the validation slice, and which one was chosen."""
        return self.reports / "model_search.json"

    @property
    def signal_tuning(self) -> Path:
        """``recflow tune-signals``: every trial and the holdout table."""
        return self.reports / "signal_tuning.json"

    @property
    def signals_patch(self) -> Path:
        """``recflow tune-signals``: the chosen values, as params.yaml keys to apply."""
        return self.reports / "signals_patch.yaml"

    @property
    def promotion_report(self) -> Path:
        return self.reports / "promotion.json"

    @property
    def train_report(self) -> Path:
        """What train did (pairs, epochs, validation precision, seconds)."""
        return self.reports / "train.json"

    @property
    def evaluation_details(self) -> Path:
        """Every model's metrics with segments, the champion's scoring, the ALS setting."""
        return self.reports / "evaluation_details.json"

    @property
    def per_user_precision(self) -> Path:
        """precision@k of every holdout user for every model (the gate's paired test)."""
        return self.reports / "per_user_precision.parquet"

    @property
    def feature_asset_state(self) -> Path:
        """Fingerprint of the features last announced to the training DAG."""
        return self.reports / "feature_asset.json"

    def stage_summary(self, stage: str) -> Path:
        return self.reports / "summary" / f"{stage}.json"

    @property
    def metrics(self) -> Path:
        """The headline metrics (``dvc metrics show``): one small JSON per model."""
        return self.root / "metrics"

    def model_metrics(self, model: str) -> Path:
        return self.metrics / f"{model}.json"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def precision_plot(self) -> Path:
        return self.plots / "precision_at_k.csv"

    @property
    def validation_curve(self) -> Path:
        return self.plots / "validation_curve.csv"

    @property
    def search_plot(self) -> Path:
        """One row per search trial: family, setting, validation precision, seconds."""
        return self.plots / "model_search.csv"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def serving_metrics(self) -> Path:
        """prometheus-client's multi-process files of the running server (emptied at start)."""
        return self.logs / "prometheus"


def project_root() -> Path:
    """The project root: $RECFLOW_ROOT if set (the CLI's --root sets it), else the nearest
    parent of the working directory holding params.yaml, else the package's parent."""
    env = settings().root
    if env:
        return env
    cwd = Path.cwd().resolve()
    for d in (cwd, *cwd.parents):
        if (d / "params.yaml").exists() and (d / "dvc.yaml").exists():
            return d
    return Path(__file__).resolve().parent.parent


def paths(root: Path | None = None) -> Paths:
    return Paths((root or project_root()).resolve())
