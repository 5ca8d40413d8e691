#!/usr/bin/env python3
"""Signed Slack slash commands for scripts/bench (stdlib only).

Slack signs a request as X-Slack-Signature = "v0=" + hex HMAC-SHA256(secret, "v0:{ts}:{raw body}")
with X-Slack-Request-Timestamp = ts, and both servers refuse a ts more than 300 s old: generate
right before a run.

  files  --secret S --text T --first N --per-file M --files K --out PREFIX
         writes PREFIX.0 … PREFIX.<K-1>, M lines each: ts TAB signature TAB form body.
         Every request is a distinct user: U0J<first>, U0J<first+1>, … (8 digits).
  probe  --url URL --secret S --text T --user N
         sends one request, prints the status and the body; exit 1 unless 2xx.
"""
import argparse, hashlib, hmac, http.client, sys, time, urllib.parse

FORM = "application/x-www-form-urlencoded"


def user_id(n):
    return "U0J%08d" % n


def body(n, text, response_base="http://127.0.0.1:9/response/"):
    """A slash command as Slack posts it (form-encoded), from user number n."""
    uid = user_id(n)
    return urllib.parse.urlencode({
        "token": "bench-verification-token",
        "team_id": "T0BENCH",
        "channel_id": "C0BENCH",
        "user_id": uid,
        "user_name": uid.lower(),
        "command": "/jit",
        "text": text,
        "response_url": "%s%d" % (response_base, n),
        "trigger_id": "%d.1.bench" % n,
    })


def sign(secret, ts, raw):
    return "v0=" + hmac.new(secret.encode(), ("v0:%s:%s" % (ts, raw)).encode(), hashlib.sha256).hexdigest()


def signed(secret, n, text, ts=None):
    """(ts, signature, body) for user number n."""
    ts = str(int(time.time())) if ts is None else ts
    raw = body(n, text)
    return ts, sign(secret, ts, raw), raw


def headers(ts, sig):
    return {"Content-Type": FORM, "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig}


def cmd_files(a):
    ts = str(int(time.time()))
    n = a.first
    for k in range(a.files):
        with open("%s.%d" % (a.out, k), "w") as f:
            lines = []
            for _ in range(a.per_file):
                _, sig, raw = signed(a.secret, n, a.text, ts)
                lines.append("%s\t%s\t%s\n" % (ts, sig, raw))
                n += 1
            f.writelines(lines)


def cmd_probe(a):
    u = urllib.parse.urlsplit(a.url)
    ts, sig, raw = signed(a.secret, a.user, a.text)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.request("POST", u.path, body=raw.encode(), headers=headers(ts, sig))
    r = c.getresponse()
    text = r.read().decode(errors="replace")
    print("%d %s" % (r.status, text[:300]))
    return 0 if 200 <= r.status < 300 else 1


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("files")
    f.add_argument("--secret", required=True); f.add_argument("--text", required=True)
    f.add_argument("--first", type=int, required=True); f.add_argument("--per-file", type=int, required=True)
    f.add_argument("--files", type=int, required=True); f.add_argument("--out", required=True)
    q = sub.add_parser("probe")
    q.add_argument("--url", required=True); q.add_argument("--secret", required=True)
    q.add_argument("--text", required=True); q.add_argument("--user", type=int, required=True)
    a = p.parse_args()
    return cmd_files(a) if a.cmd == "files" else cmd_probe(a)


if __name__ == "__main__":
    sys.exit(main() or 0)
