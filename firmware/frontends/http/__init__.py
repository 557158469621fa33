"""The local Recordings API (``/v1``), modelled on Twilio's Recording resource (seed 003).

``server.ApiServer`` runs aiohttp in a thread of its own and calls the same
control API as every other front end; ``auth`` holds tokens, Basic, the
failed-login limiter and signed media links.
"""
