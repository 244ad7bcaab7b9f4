"""Spotify: sign-in, the Web API client, track resolution and playlist sync.

- `errors.py`  the exception tree, and the one function mapping answers onto it
- `retry.py`   backoff policy, interruptible sleep, retry statistics
- `auth.py`    sign-in (authorization code), the 0600 token file, token refresh
- `client.py`  `SpotifyClient`: every Web API call goes through it
- `match.py`   scoring search results against artist + title
- `resolve.py` URIs for tracks known only by name, cached in `resolved_track`
- `sync.py`    writing generated playlists so that repeated runs converge
"""
