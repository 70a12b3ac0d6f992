"""One home for names: table columns (RecTools' ``Columns``), the Feast contract, and the
feature columns that tokens and serving read. Use these instead of string literals.

``feature_repo/definitions.py`` declares its Feast objects with :class:`Feast`'s names; a test
checks that the applied views carry every column of :class:`Features`.
"""


class Columns:
    user = "user_id"
    item = "item_id"
    event = "event_type"
    ts = "event_timestamp"
    value = "value"
    weight = "weight"
    confidence = "confidence"
    category = "category"
    reason = "reason"
    score = "score"
    rank = "rank"
    batch = "batch"              # which landed file / source a raw event came from
    parse_error = "parse_error"  # why a raw row could not be read (None when fine)

    EVENT_TABLE = (user, item, event, ts, value)


class Feast:
    """Names of the Feast objects in ``feature_repo/definitions.py`` that the code reads."""

    user_entity = "user"
    item_entity = "item"
    user_source = "user_activity_source"
    item_source = "item_stats_source"
    user_push = "user_activity_push"      # fresh events reach the online store through it
    user_view = "user_activity"
    item_view = "item_stats"
    training_service = "training_v1"      # point-in-time training sets (train stage)
    serving_service = "serving_v1"        # online lookup (serving)
    user_file = "user_features.parquet"   # in feature_repo/data/, written by `recflow features`
    item_file = "item_features.parquet"
    item_attr_view = "item_attributes"    # side information (pipeline/data/attributes.py)
    user_attr_view = "user_attributes"
    item_attr_source = "item_attributes_source"
    user_attr_source = "user_attributes_source"
    item_attr_file = "item_attributes.parquet"
    user_attr_file = "user_attributes.parquet"

    # each user's exported top-k (``recflow export --to-online-store``), read by the
    # cache-first serving mode together with the serving features, in one lookup
    recs_view = "user_recs"
    recs_source = "user_recs_source"
    recs_file = "user_recs.parquet"
    cached_service = "serving_cached_v1"

    #: view → (feature file, join key)
    VIEWS = {user_view: (user_file, Columns.user), item_view: (item_file, Columns.item),
             item_attr_view: (item_attr_file, Columns.item),
             user_attr_view: (user_attr_file, Columns.user)}


class Recs:
    """Columns of the exported top-k view (``Feast.recs_view``): what serving needs to answer
    from it, and to know whether the answer is still the one it would compute."""

    items = "rec_items"        # JSON array of item ids, best first
    scores = "rec_scores"      # JSON array of their scores
    k = "rec_k"                # how many the export asked for (a prefix serves any k ≤ it)
    version = "rec_version"    # the champion that computed them
    inputs = "rec_inputs"      # digest of the online features they were computed from

    ALL = (items, scores, k, version, inputs)


class Features:
    """Feature columns read outside the SQL that writes them (tokens, serving, evaluation).

    Per-event-type counts (``n_<type>[_<d>d]``) follow ``params.yaml`` and are listed by
    ``features.snapshots.user_feature_columns``.
    """

    # user_activity
    n_events = "n_events"
    recency_days = "recency_days"
    top_category = "top_category"
    recent_items = "recent_items"     # the most recent items (the models' history)
    seen_items = "seen_items"         # every item the user had (repeatable types aside)
    # item_stats
    pop_all = "pop_all"
    conversion_rate = "conversion_rate"
    category = Columns.category

    USER = (n_events, recency_days, top_category, recent_items, seen_items)
    ITEM = (pop_all, conversion_rate, category)
