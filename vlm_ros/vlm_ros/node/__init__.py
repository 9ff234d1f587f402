"""vlm_node and what only it uses: scheduler, frames, parameters, diagnostics, messages, images.

May import engine/ and spin; never bag/, eval/, demo/ or tools/ (they build on this layer).
"""
