"""Offline evaluation: bag inputs, batched answers, records, references, CE scoring, report.

May import engine/, node/ and bag/; never demo/ or tools/. Teacher forcing lives here because
scoring needs it; demo/tiny reuses it to train the tiny checkpoints.
"""
