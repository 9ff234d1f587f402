"""The demo: the synthetic tabletop scene (also the tests' frames) and the demo's model.

The model is a tiny checkpoint from models/ trained on the sample recording's references.
May import engine/, bag/, eval/ and models/; the node, the tools and the benchmarks never
import it.
"""
