"""A corp's lane: never more threads than twice its in-flight limit, released on exit
(also when the call raised), each corp counted apart."""

from __future__ import annotations

import threading
from contextlib import ExitStack

import pytest

from worker.lanes import CorpLanes


def test_a_full_lane_turns_the_next_thread_away_and_frees_on_exit() -> None:
    lanes = CorpLanes(lambda corp: 2)
    with ExitStack() as stack:
        entered = [stack.enter_context(lanes.enter("a")) for _ in range(5)]
        assert entered == [True, True, True, True, False]
        assert lanes.held("a") == 4
        with lanes.enter("b") as other:
            assert other, "another corp has a lane of its own"
    assert lanes.held("a") == 0 and lanes.held("b") == 0


def test_a_place_is_given_back_when_the_body_raises() -> None:
    lanes = CorpLanes(lambda corp: 1)
    with pytest.raises(RuntimeError), lanes.enter("a") as entered:
        assert entered
        raise RuntimeError("the call crashed")
    assert lanes.held("a") == 0


def test_threads_racing_for_a_lane_never_exceed_its_capacity() -> None:
    lanes = CorpLanes(lambda corp: 4)
    inside, peak, lock = [0], [0], threading.Lock()
    start = threading.Barrier(32)

    def one() -> None:
        start.wait()
        for _ in range(200):
            with lanes.enter("a") as entered:
                if entered:
                    with lock:
                        inside[0] += 1
                        peak[0] = max(peak[0], inside[0])
                    with lock:
                        inside[0] -= 1

    threads = [threading.Thread(target=one) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1 <= peak[0] <= lanes.capacity("a") == 8
    assert lanes.held("a") == 0
