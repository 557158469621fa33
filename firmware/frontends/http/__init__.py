"""The local Recordings API (``/v1``), modelled on Twilio's Recording resource, and Twilio's own
Recordings API beside it (``/2010-04-01``).

``server.ApiServer`` runs aiohttp in a thread of its own and calls the same
control API as every other front end; ``twilio`` holds Twilio's routes and
field mapping; ``auth`` holds tokens, Basic, the failed-login limiter, signed
media links and Vonage JWTs; ``inputs`` checks what a request carries.
"""
