"""vlm_replay --record's recorder: its echo, and what anything on the DDS domain sends it.

--echo prints each recorded answer as it arrives, as vlm_client prints it. The echo is a view
of the recording: a reader that goes away (`--echo | head`) ends the echo, with one warning,
and never the recording. The plans the recorder waits for at the end are bounded in number
and size, whoever publishes PlanProgress.
"""

import select
import signal
import subprocess
import uuid

from node_harness import RELIABLE, TIMEOUT
from test_replay import irregular_events, replay_executable, write_bag
from vlm_ros.bag.recorder import MAX_EXECUTING, MAX_PLAN_ID, Recorder
from vlm_ros.bag.storage import CAPTION_TYPE, open_bag
from waiting import wait_until

from vlm_ros_msgs.msg import Caption, PlanProgress


def test_a_closed_standard_output_ends_the_echo_and_the_recording_goes_on(test_node, tmp_path):
    write_bag(tmp_path / 'bag', irregular_events(8))
    captions = test_node.node.create_publisher(Caption, '/caption', RELIABLE)
    log = tmp_path / 'replay.log'
    texts = [f'a caption #{uuid.uuid4().hex[:8]}' for _ in range(3)]
    with log.open('w') as stderr:
        proc = subprocess.Popen(
            [replay_executable(), str(tmp_path / 'bag'), '--loop', '--record',
             str(tmp_path / 'answers'), '--record-topics', 'caption', '--echo'],
            stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        wait_until(lambda: captions.get_subscription_count() > 0, TIMEOUT, 'the recorder')
        captions.publish(Caption(text=texts[0]))
        assert select.select([proc.stdout], [], [], TIMEOUT)[0], 'no echo'
        echoed = proc.stdout.readline()
        assert echoed.startswith('[/caption] ') and texts[0] in echoed, echoed
        proc.stdout.close()  # the reader goes away
        captions.publish(Caption(text=texts[1]))
        wait_until(lambda: '--echo stopped' in log.read_text(), TIMEOUT, 'the echo to stop')
        captions.publish(Caption(text=texts[2]))
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(TIMEOUT)
        test_node.node.destroy_publisher(captions)
    said = log.read_text()
    assert code == 0 and 'Traceback' not in said, said
    assert said.count('--echo stopped: standard output is closed; the recording goes on') == 1, \
        said
    with open_bag(tmp_path / 'answers') as reader:
        recorded = [reader.deserialize(raw, c.msgtype).text for c, _, raw in
                    reader.messages() if c.msgtype == CAPTION_TYPE]
    # The first two were written before their echo, the third after the echo had stopped:
    # recorded, unless the interrupt came before it arrived.
    assert recorded[:2] == texts[:2] and recorded[2:] in ([], texts[2:]), recorded


def test_plans_said_to_execute_by_anyone_are_kept_bounded(test_node, tmp_path):
    """A flood of executing plans (long ids) is recorded; the few waited for are bounded."""
    recorder = Recorder(test_node.node, tmp_path / 'answers', ['plan_progress'])
    progress = test_node.node.create_publisher(PlanProgress, '/plan_progress', RELIABLE)
    flood = [f'{number}-{uuid.uuid4().hex}' * 1000 for number in range(MAX_EXECUTING + 36)]
    try:
        for plan_id in flood:
            progress.publish(PlanProgress(plan_id=plan_id, state=PlanProgress.STATE_EXECUTING))
        wait_until(lambda: recorder.counts['/plan_progress'] == len(flood), TIMEOUT,
                   'every PlanProgress recorded')
        assert len(recorder.executing) == MAX_EXECUTING
        assert recorder.executing == {plan_id[:MAX_PLAN_ID] for plan_id in
                                      flood[:MAX_EXECUTING]}
        for plan_id in flood:  # their ends, under the same long ids
            progress.publish(PlanProgress(plan_id=plan_id, state=PlanProgress.STATE_DONE))
        wait_until(lambda: not recorder.executing, TIMEOUT, 'the ends to be taken')
    finally:
        recorder.close()
        test_node.node.destroy_publisher(progress)
