"""Delivery: what central servers see of the box. The outbox (events, webhooks
and uploads waiting to go out, in the catalog's SQLite), the MQTT link, status
callbacks, uploads over HTTP, S3 and MQTT, and retention."""
