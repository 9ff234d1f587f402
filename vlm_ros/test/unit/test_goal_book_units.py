"""Goals whose action client is gone: what both action servers end (goal_book.Orphans)."""

import time

from vlm_ros.node.goal_book import Orphans


def test_goals_are_orphans_after_two_looks_without_a_client_and_young_ones_are_kept():
    clients = [0]
    orphans = Orphans(lambda: clients[0])
    now = time.monotonic()
    received = {'old': now - 10.0, 'new': now + 10.0}.get  # 'new' came after the looks began
    goals = ['old', 'new']
    assert orphans.look(goals, received) == [], 'one look without a client is not enough'
    assert orphans.look(goals, received) == ['old']
    clients[0] = 1  # a client on the graph again: the looks start over
    assert orphans.look(goals, received) == []
    clients[0] = 0
    assert orphans.look(goals, received) == []
    assert orphans.look([], received) == [], 'nothing to end'
    assert orphans.look(goals, received) == [], 'no goals broke the run of looks'
    assert orphans.look(goals, received) == ['old']
