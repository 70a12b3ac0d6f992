"""One home for column names (RecTools' ``Columns``): use these instead of string literals."""


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
