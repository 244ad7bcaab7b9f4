"""songnet's edges: storage, Spotify, scheduling and the command line. Calls `songnet_core`."""
