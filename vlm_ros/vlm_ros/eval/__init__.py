"""Offline evaluation: bag inputs, batched answers, records, references, CE scoring, report.

May import engine/, node/ and bag/; never demo/ or tools/. CE scoring asks the engine
(Engine.score, teacher forcing in engine/local/teacher_forcing.py).
"""
