"""One Ray Serve deployment per stage, each a thin wrapper over ``cartoon``."""
