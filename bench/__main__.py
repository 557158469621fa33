"""Run every benchmark: ``python -m bench`` (or ``./run.sh bench``)."""

from . import api, core_speed, crash_encrypted, daemon, delivery, dtmf_accuracy, realtime, update_news

if __name__ == "__main__":
    dtmf_accuracy.main()
    core_speed.main()
    daemon.main()
    realtime.main()
    delivery.main()
    api.main()
    crash_encrypted.main()
    update_news.main()
