"""The confirm bookkeeping of the RabbitMQ dispatcher: a batch counts as taken only when
every one of its delivery tags is acked, singly or by a `multiple` ack; a nack or a
returned message refuses the batch."""

from __future__ import annotations

from types import SimpleNamespace

from pika.spec import Basic

from broadcaster.broker.rabbitmq import _Confirms


def frame(method: object) -> SimpleNamespace:
    return SimpleNamespace(method=method)


def test_a_batch_is_taken_only_when_every_tag_is_acked() -> None:
    confirms = _Confirms()
    confirms.on_confirm(frame(Basic.Ack(delivery_tag=3, multiple=True)))
    assert confirms.all_acked(1, 3) and not confirms.all_acked(1, 5)
    confirms.on_confirm(frame(Basic.Ack(delivery_tag=5, multiple=False)))
    assert not confirms.all_acked(4, 5), "tag 4 is not acked yet"
    confirms.on_confirm(frame(Basic.Ack(delivery_tag=4, multiple=False)))
    assert confirms.all_acked(1, 5) and not confirms.refused
    confirms.on_confirm(frame(Basic.Ack(delivery_tag=6, multiple=True)))
    assert confirms.acked == set() and confirms.all_acked(1, 6)


def test_a_nack_or_a_return_refuses_the_batch() -> None:
    nacked = _Confirms()
    nacked.on_confirm(frame(Basic.Nack(delivery_tag=2, multiple=False)))
    assert "nack" in nacked.refused
    returned = _Confirms()
    returned.on_return(None, None, None, b"")
    assert "no queue broadcasts" in returned.refused
