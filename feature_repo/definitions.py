"""recflow's Feast objects: entities, then sources, then views, then versioned services.

The feature parquet files are written by ``recflow features`` (DuckDB SQL in
``pipeline/features/snapshots.py``); nothing here generates data. Feature schemas are inferred
from those files at ``apply`` time, because the per-event-type counts and window columns
follow ``params.yaml`` (signals.weights, features.windows_days); a test checks that the
inferred schema holds every column the code reads (``pipeline.columns.Features``). Every name
comes from ``pipeline.columns.Feast``.
"""

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Int64, String

from pipeline.columns import Columns as C
from pipeline.columns import Feast, Recs

DATA = Path(__file__).resolve().parent / "data"
# Snapshots are stamped at their as-of time; they stay valid until the next one.
SNAPSHOT_TTL = timedelta(days=3650)

user = Entity(name=Feast.user_entity, join_keys=[C.user], value_type=ValueType.STRING,
              description="A person who leaves implicit feedback.")
item = Entity(name=Feast.item_entity, join_keys=[C.item], value_type=ValueType.STRING,
              description="Something that can be recommended.")

user_activity_source = FileSource(
    name=Feast.user_source,
    path=str(DATA / Feast.user_file),
    timestamp_field=C.ts,
)
# Fresh events (after the last batch) reach the online store through this push source; its
# batch source is the snapshot file, so training and materialization read the same rows.
user_activity_push = PushSource(
    name=Feast.user_push,
    batch_source=user_activity_source,
)
item_stats_source = FileSource(
    name=Feast.item_source,
    path=str(DATA / Feast.item_file),
    timestamp_field=C.ts,
)

user_activity_fv = FeatureView(
    name=Feast.user_view,
    entities=[user],
    ttl=SNAPSHOT_TTL,
    source=user_activity_push,
    online=True,
    tags={"team": "recflow", "role": "user"},
)
item_stats_fv = FeatureView(
    name=Feast.item_view,
    entities=[item],
    ttl=SNAPSHOT_TTL,
    source=item_stats_source,
    online=True,
    tags={"team": "recflow", "role": "item"},
)

# Attributes are static side information stamped at the epoch: they never expire.
ATTRIBUTE_TTL = timedelta(days=365 * 100)
item_attributes_source = FileSource(
    name=Feast.item_attr_source,
    path=str(DATA / Feast.item_attr_file),
    timestamp_field=C.ts,
)
user_attributes_source = FileSource(
    name=Feast.user_attr_source,
    path=str(DATA / Feast.user_attr_file),
    timestamp_field=C.ts,
)
item_attributes_fv = FeatureView(
    name=Feast.item_attr_view,
    entities=[item],
    ttl=ATTRIBUTE_TTL,
    source=item_attributes_source,
    online=True,
    tags={"team": "recflow", "role": "item"},
)
user_attributes_fv = FeatureView(
    name=Feast.user_attr_view,
    entities=[user],
    ttl=ATTRIBUTE_TTL,
    source=user_attributes_source,
    online=True,
    tags={"team": "recflow", "role": "user"},
)

# Each user's top-k as exported by the champion (`recflow export --to-online-store`), for the
# cache-first serving mode. Written at export time; the schema is declared (the file may not
# exist yet when the repo is applied). It is valid while its version is the champion and its
# inputs digest matches the user's online features (serving checks both).
user_recs_source = FileSource(
    name=Feast.recs_source,
    path=str(DATA / Feast.recs_file),
    timestamp_field=C.ts,
)
user_recs_fv = FeatureView(
    name=Feast.recs_view,
    entities=[user],
    ttl=SNAPSHOT_TTL,
    schema=[Field(name=C.user, dtype=String),
            *(Field(name=f, dtype=Int64 if f == Recs.k else String) for f in Recs.ALL)],
    source=user_recs_source,
    online=True,
    tags={"team": "recflow", "role": "user", "kind": "export"},
)

training_v1 = FeatureService(name=Feast.training_service,
                             features=[user_activity_fv, item_stats_fv, user_attributes_fv,
                                       item_attributes_fv],
                             description="Point-in-time training sets (train stage).")
serving_v1 = FeatureService(name=Feast.serving_service, features=[user_activity_fv, user_attributes_fv],
                            description="Online lookup of a user's features (serving).")
serving_cached_v1 = FeatureService(name=Feast.cached_service,
                                   features=[user_activity_fv, user_attributes_fv, user_recs_fv],
                                   description="The serving features plus the exported top-k "
                                               "(cache-first serving): one online lookup.")
