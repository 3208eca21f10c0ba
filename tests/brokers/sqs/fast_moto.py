"""``moto_server`` with its clock helper made cheap: ``python fast_moto.py -H 127.0.0.1 -p PORT``.

moto 5's SQS computes every attribute of a queue (each count a pass over all its
messages, each message's visibility read through ``unix_time()``, which builds two
datetimes) several times for every message sent and received, so its cost grows
with the square of a queue's length. ``unix_time()`` with no argument is the current
Unix time; this launcher makes it ``time.time()``, the same value, before starting
the server unchanged otherwise. Nothing else of moto's behaviour is touched.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime

import moto.core.utils as utils

_EPOCH = datetime(1970, 1, 1)


def unix_time(dt: datetime | None = None) -> float:
    if dt is None:
        return time.time()
    return (dt - _EPOCH).total_seconds()


def unix_time_millis(dt: datetime | None = None) -> float:
    return unix_time(dt) * 1000.0


def main(argv: list[str]) -> None:
    utils.unix_time = unix_time
    utils.unix_time_millis = unix_time_millis
    import moto.sns.models
    import moto.sqs.models

    for module in (moto.sqs.models, moto.sns.models):
        for name, patched in (("unix_time", unix_time), ("unix_time_millis", unix_time_millis)):
            if hasattr(module, name):
                setattr(module, name, patched)
    from moto.server import main as serve

    serve(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
