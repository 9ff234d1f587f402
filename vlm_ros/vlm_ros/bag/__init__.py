"""rosbag2 (and ROS 1) files: reading, writing, playback into the graph, recording from it.

May import engine/, spin and node/ (message formatting); never eval/, demo/ or tools/.
"""
