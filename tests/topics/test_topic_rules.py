"""The pure rules of topics: names, event types, privacy, compound ids."""

from __future__ import annotations

import pytest

from ssegate.topics import (
    MAX_TOPICS_PER_SUBSCRIPTION,
    TopicInputError,
    decode_compound_id,
    encode_compound_id,
    encode_data,
    may_read_topic,
    validate_event_type,
    validate_topic,
)


@pytest.mark.parametrize("name", ["news", "user/alice/jobs", "a.b:c-d_e/F9", "x" * 200])
def test_validate_topic_accepts_segment_names(name: str) -> None:
    assert validate_topic(name) == name


@pytest.mark.parametrize(
    "name", ["", "a//b", "/a", "a/", "a/../b", ".", "a b", "a\nb", "a{b}", "é", "x" * 201, "a?b"]
)
def test_validate_topic_rejects_bad_names(name: str) -> None:
    with pytest.raises(TopicInputError):
        validate_topic(name)


@pytest.mark.parametrize("event", ["progress", "job.done", "a:b-c_d", "message"])
def test_validate_event_type_accepts_plain_names(event: str) -> None:
    assert validate_event_type(event) == event


@pytest.mark.parametrize(
    "event",
    ["", "a\nb", "a\rb", "a\0b", "has space", "reset", "start", "done", "error", "ssegate.opened", "x" * 65],
)
def test_validate_event_type_rejects_injection_and_reserved_names(event: str) -> None:
    with pytest.raises(TopicInputError):
        validate_event_type(event)


def test_encode_data_sends_every_value_as_json_text() -> None:
    assert encode_data("hi") == '"hi"'
    assert encode_data({"a": [1, None, True]}) == '{"a":[1,null,true]}'
    assert encode_data("é\n") == '"é\\n"'  # never a raw line break on the wire
    with pytest.raises(TopicInputError):
        encode_data(float("nan"))


@pytest.mark.parametrize(
    ("principal", "topic", "admin", "allowed"),
    [
        ("alice", "user/alice/jobs", False, True),
        ("alice", "user/alice", False, True),
        ("bob", "user/alice/jobs", False, False),
        ("bob", "user", False, False),
        ("bob", "user/alice/jobs", True, True),
        ("local", "user/alice/jobs", False, True),
        ("bob", "news/user/alice", False, True),
        ("bob", "users/alice", False, True),
    ],
)
def test_may_read_topic_keeps_user_topics_private(
    principal: str, topic: str, admin: bool, allowed: bool
) -> None:
    assert may_read_topic(principal, topic, admin=admin) is allowed


def test_compound_id_round_trips_and_fits_last_event_id_limit() -> None:
    topics = sorted(f"topic-{i}" for i in range(MAX_TOPICS_PER_SUBSCRIPTION))
    epochs = ["k3x9abcdef"] * len(topics)
    seqs = [2**36 - 1 - i for i in range(len(topics))]  # 68 billion events per topic
    value = encode_compound_id(topics, epochs, seqs)
    assert len(value.encode()) <= 128
    decoded = decode_compound_id(value, topics)
    assert decoded is not None
    assert decoded[1] == seqs


@pytest.mark.parametrize("value", ["k3x9:12", "m", "mABCDEFGH", "mABCDEFGH.1", "mABCDEFGH.1.!", "mABC.1.2"])
def test_decode_compound_id_rejects_ids_it_did_not_make(value: str) -> None:
    assert decode_compound_id(value, ["a", "b"]) is None


def test_compound_id_check_changes_when_a_topic_is_recreated() -> None:
    first = encode_compound_id(["a", "b"], ["e1", "e2"], [3, 4])
    again = encode_compound_id(["a", "b"], ["e1", "e3"], [3, 4])
    assert first != again
