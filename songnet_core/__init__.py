"""songnet's pure domain logic: parsing exports, sessions, the model, generation.

Nothing here imports `service`, spotipy, sqlmodel or apscheduler; it works on plain data
types so it can be tested and reused without a database or a network.
"""

__version__ = "0.1.0"
