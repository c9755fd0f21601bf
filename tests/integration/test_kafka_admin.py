"""The Kafka admin adapter against the real broker: a consumer group's lag, and deleting
topics so they can be made again at once (the demo's clean slate)."""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from movierec.kafka_admin import delete_topics, ensure_topic, group_lag, topic_lines
from tests.integration.conftest import LocalStack

pytestmark = pytest.mark.integration


def test_group_lag_counts_what_the_group_has_not_committed(stack: LocalStack, unique: str) -> None:
    topic, group = f"lag-{unique}", f"group-{unique}"
    assert group_lag(stack.bootstrap, group, topic) is None  # no such topic yet
    ensure_topic(stack.bootstrap, topic, 2)
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap)
    for i in range(10):
        producer.send(topic, value=b"x", partition=i % 2)
    producer.flush()
    producer.close()
    assert group_lag(stack.bootstrap, group, topic) == 10  # never committed: all of it
    assert topic_lines(stack.bootstrap, topic) == 10
    assert topic_lines(stack.bootstrap, f"missing-{unique}") == 0

    member = KafkaConsumer(bootstrap_servers=stack.bootstrap, group_id=group,
                           enable_auto_commit=False)
    try:
        member.commit({TopicPartition(topic, 0): OffsetAndMetadata(4, "", -1),
                       TopicPartition(topic, 1): OffsetAndMetadata(2, "", -1)})
    finally:
        member.close()
    assert group_lag(stack.bootstrap, group, topic) == (5 - 4) + (5 - 2)


def test_deleted_topics_can_be_made_again_at_once(stack: LocalStack, unique: str) -> None:
    names = [f"del-a-{unique}", f"del-b-{unique}"]
    for name in names:
        ensure_topic(stack.bootstrap, name, 3)
    assert delete_topics(stack.bootstrap, [*names, f"never-{unique}"]) == names
    assert delete_topics(stack.bootstrap, names) == []
    assert ensure_topic(stack.bootstrap, names[0], 1) == 1  # a fresh topic, not the old one
