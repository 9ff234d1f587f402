"""A reference action head: the VLM's features in, the robot's next actions out (issue 28).

policy.py is the network and what it predicts; training.py fits it to a dataset of vlm_export
and stores it with what it was trained on. May import engine/ (and torch); no rclpy, and never
node/, demo/ or tools/: tools/action_head.py is the node.
"""
