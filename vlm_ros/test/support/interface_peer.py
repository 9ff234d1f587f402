"""A separate ROS 2 process that publishes vlm_ros_msgs and serves Query, for DDS tests.

Usage: interface_peer.py PAYLOAD. Publishes a Plan and a Caption carrying PAYLOAD ten times a
second (so a late subscriber still gets one) and answers Query with 'PAYLOAD:<question>'.
"""

import sys

from rclpy.node import Node
from vlm_ros.spin import spin_main

from vlm_ros_msgs.msg import Caption, Plan, PlanStep
from vlm_ros_msgs.srv import Query


class InterfacePeer(Node):
    """Publisher and service server whose outputs all carry one payload."""

    def __init__(self, payload: str):
        super().__init__('interface_peer')
        self._payload = payload
        self._plan_pub = self.create_publisher(Plan, 'plan', 10)
        self._caption_pub = self.create_publisher(Caption, 'caption', 10)
        self.create_service(Query, 'query', self._answer)
        self.create_timer(0.1, self._publish)

    def _publish(self) -> None:
        plan = Plan(request_id=self._payload, instruction=f'plan {self._payload}',
                    status=Plan.STATUS_OK, model='peer', output_tokens=7)
        plan.header.frame_id = 'camera'
        plan.header.stamp.sec = 42
        plan.steps = [PlanStep(instruction='pick up the red block', skill='pick',
                               target='red block')]
        self._plan_pub.publish(plan)
        caption = Caption(text=f'caption {self._payload}', model='peer', total_time=0.5)
        caption.header.frame_id = 'camera'
        self._caption_pub.publish(caption)

    def _answer(self, request, response):
        response.success = True
        response.answer = f'{self._payload}:{request.question}'
        response.image_header = request.image.header
        return response


if __name__ == '__main__':
    sys.exit(spin_main(lambda: InterfacePeer(sys.argv[1])))
