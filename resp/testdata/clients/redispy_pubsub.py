"""Publish/subscribe through redis-py (RESP2), unchanged, against a server.

Usage: /usr/bin/python3 redispy_pubsub.py HOST:PORT

Prints one JSON line of what happened; resp/clients_test.go checks every
value, and runs the same script against redis-server to show the expected
values are Redis's own. Exits 1 on an exception, after printing it.
"""

import json
import sys
import time
import traceback

try:
    import redis
except ImportError:
    print("python3 redis module not found: apt-get install python3-redis (make deps)",
          file=sys.stderr)
    sys.exit(2)

PIPELINED = 1000
PLAIN = 10
ODD_PAYLOAD = "line 1\r\nline 2 \u2603 \u00e9\n"
WAIT = 10.0  # seconds get_message may wait for one message; a bound, not a pause


def next_message(p, ignore_subscribe_messages=False):
    """Returns the next pub/sub message as a list, or None after WAIT."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        m = p.get_message(ignore_subscribe_messages=ignore_subscribe_messages,
                          timeout=deadline - time.monotonic())
        if m is not None:
            if m["type"] == "pmessage":
                return [m["type"], m["pattern"], m["channel"], m["data"]]
            if m["type"] == "pong":
                return [m["type"], m["data"]]
            return [m["type"], m["channel"], m["data"]]
    return None


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    port = int(port)
    out = {"client": "redis-py", "version": redis.__version__}

    def connect():
        # health_check_interval makes every connection PING before a command
        # when idle for a second, and the PubSub send
        # "PING redis-py-health-check" while subscribed.
        return redis.Redis(host=host, port=port, decode_responses=True,
                           socket_timeout=30, health_check_interval=1)

    pub = connect()
    out["setname"] = pub.client_setname("herald-redispy-pub")
    out["getname"] = pub.client_getname()

    sub = connect()
    p = sub.pubsub()
    p.subscribe("news")
    p.psubscribe("news.*")
    out["subscribed"] = [next_message(p), next_message(p)]

    out["numsub"] = [list(x) for x in pub.pubsub_numsub("news", "nobody")]
    out["numpat"] = pub.pubsub_numpat()

    # PING while subscribed: redis-py sends PING "" and reads ["pong", ""].
    p.ping()
    out["ping"] = next_message(p)
    p.ping("hi")
    out["ping_arg"] = next_message(p)

    # A health check now, rather than after a second of waiting: make the
    # next check due, send it, and read until its answer has been consumed.
    # (A check made due by a slow run may still be outstanding: count only
    # the one sent here.)
    before = p.health_check_response_counter
    p.connection.next_health_check = 0
    p.check_health()
    out["health_checks_sent"] = p.health_check_response_counter - before
    stray = []
    for _ in range(100):
        if p.health_check_response_counter == 0:
            break
        m = p.get_message(timeout=WAIT)
        if m is not None:
            stray.append(m)
    out["health_checks_unanswered"] = p.health_check_response_counter
    out["stray"] = stray

    expected = []
    plain = []
    for i in range(PLAIN):
        plain.append(pub.publish("news", f"plain-{i}"))
        expected.append(["message", "news", f"plain-{i}"])
        plain.append(pub.publish("news.sport", f"sport-{i}"))
        expected.append(["pmessage", "news.*", "news.sport", f"sport-{i}"])
    # Line breaks and multi-byte characters inside a payload.
    plain.append(pub.publish("news", ODD_PAYLOAD))
    expected.append(["message", "news", ODD_PAYLOAD])
    plain.append(pub.publish("nobody", "lost"))
    out["plain_receivers"] = plain

    pipe = pub.pipeline(transaction=False)
    for i in range(PIPELINED):
        if i % 2 == 0:
            pipe.publish("news", f"pipe-{i}")
            expected.append(["message", "news", f"pipe-{i}"])
        else:
            pipe.publish("news.bulk", f"pipe-{i}")
            expected.append(["pmessage", "news.*", "news.bulk", f"pipe-{i}"])
    replies = pipe.execute()
    out["pipelined_replies"] = len(replies)
    out["pipelined_receivers"] = sorted(set(replies))

    got = []
    for _ in range(len(expected)):
        m = next_message(p)
        if m is None:
            break
        got.append(m)
    out["received"] = len(got)
    out["in_order"] = got == expected
    out["first_mismatch"] = None
    for i, (g, e) in enumerate(zip(got, expected)):
        if g != e:
            out["first_mismatch"] = {"index": i, "got": g, "want": e}
            break

    p.unsubscribe()
    p.punsubscribe()
    out["unsubscribed"] = [next_message(p), next_message(p)]
    out["subscribed_after"] = p.subscribed
    # The confirmations have been read: publishers must see no subscriber.
    out["numsub_after"] = [list(x) for x in pub.pubsub_numsub("news")]
    out["publish_after"] = pub.publish("news", "late")

    p.close()
    sub.close()
    pub.close()
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.exit(1)
