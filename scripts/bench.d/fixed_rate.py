#!/usr/bin/env python3
"""Fixed-rate load for scripts/bench (stdlib only): wrk cannot hold a rate, this does.

Sends signed slash commands (distinct users, from --first) at --rate per second for --secs
seconds over --conns keep-alive connections, one thread each with its own http.client
connection. Request i is due at start + i/rate and goes out on connection i mod conns; its
latency is measured from that due time, so time spent waiting behind a slow answer counts
(no coordinated omission). Prints one line: "bench-fixed key=value …" (latencies in ms).
"""
import argparse, http.client, math, os, sys, threading, time, urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from signed_requests import headers, signed  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True); p.add_argument("--secret", required=True)
    p.add_argument("--text", required=True); p.add_argument("--first", type=int, required=True)
    p.add_argument("--rate", type=float, default=200); p.add_argument("--secs", type=float, default=10)
    p.add_argument("--conns", type=int, default=16)
    a = p.parse_args()
    u = urllib.parse.urlsplit(a.url)
    total = int(a.rate * a.secs)
    ts = str(int(time.time()))
    prepared = []
    for i in range(total):
        _, sig, raw = signed(a.secret, a.first + i, a.text, ts)
        prepared.append((raw.encode(), headers(ts, sig)))

    lat = [None] * total          # seconds from due time to full answer, per request
    status = [0] * total          # HTTP status, 0 for a connection error
    reconnects = [0] * a.conns
    start = time.perf_counter() + 0.2

    def worker(k):
        conn = None
        for i in range(k, total, a.conns):
            due = start + i / a.rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            raw, hdrs = prepared[i]
            for attempt in (0, 1):   # a keep-alive connection the server closed: reconnect once
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
                    conn.request("POST", u.path, body=raw, headers=hdrs)
                    r = conn.getresponse()
                    r.read()
                    status[i] = r.status
                    lat[i] = time.perf_counter() - due
                    if r.getheader("Connection", "").lower() == "close":
                        conn.close(); conn = None
                    break
                except (http.client.HTTPException, OSError):
                    if conn is not None:
                        conn.close()
                    conn = None
                    reconnects[k] += 1
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(a.conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start

    done = sorted(x for x in lat if x is not None)
    ok = sum(1 for s in status if 200 <= s < 300)
    errors = sum(1 for s in status if s == 0)

    def pct(q):
        if not done:
            return float("nan")
        return done[min(len(done), max(1, math.ceil(q / 100.0 * len(done)))) - 1] * 1000  # nearest rank

    print("bench-fixed sent=%d ok=%d non2xx=%d errors=%d reconnects=%d elapsed_s=%.2f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f"
          % (total, ok, total - ok - errors, errors, sum(reconnects), elapsed, pct(50), pct(99),
             (done[-1] * 1000 if done else float("nan"))))


if __name__ == "__main__":
    main()
