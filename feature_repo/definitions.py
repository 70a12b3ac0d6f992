"""recflow's Feast objects: entities, then sources, then views, then versioned services.

The feature parquet files are written by ``recflow features`` (DuckDB SQL in
``pipeline/features.py``); nothing here generates data. Feature schemas are inferred from
those files at ``apply`` time, because the per-event-type counts and window columns follow
``params.yaml`` (signals.weights, features.windows_days).
"""

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, FileSource, PushSource, ValueType

DATA = Path(__file__).resolve().parent / "data"
# Snapshots are stamped at their as-of time; they stay valid until the next one.
SNAPSHOT_TTL = timedelta(days=3650)

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING,
              description="A person who leaves implicit feedback.")
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING,
              description="Something that can be recommended.")

user_activity_source = FileSource(
    name="user_activity_source",
    path=str(DATA / "user_features.parquet"),
    timestamp_field="event_timestamp",
)
# Fresh events (after the last batch) reach the online store through this push source; its
# batch source is the snapshot file, so training and materialization read the same rows.
user_activity_push = PushSource(
    name="user_activity_push",
    batch_source=user_activity_source,
)
item_stats_source = FileSource(
    name="item_stats_source",
    path=str(DATA / "item_features.parquet"),
    timestamp_field="event_timestamp",
)

user_activity_fv = FeatureView(
    name="user_activity",
    entities=[user],
    ttl=SNAPSHOT_TTL,
    source=user_activity_push,
    online=True,
    tags={"team": "recflow", "role": "user"},
)
item_stats_fv = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=SNAPSHOT_TTL,
    source=item_stats_source,
    online=True,
    tags={"team": "recflow", "role": "item"},
)

training_v1 = FeatureService(name="training_v1", features=[user_activity_fv, item_stats_fv],
                             description="Point-in-time training sets (train stage).")
serving_v1 = FeatureService(name="serving_v1", features=[user_activity_fv],
                            description="Online lookup of a user's features (serving).")
