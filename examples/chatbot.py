#!/usr/bin/env python3
"""The chatbot's get_sales_data, asking the freshcache sidecar instead of Redis and the warehouse.

The original kept its own keys and TTL in Redis; here the sidecar (`freshcache serve`) decides:
after a warehouse update nobody gets the old figures as current, a thousand users asking at once
cost one warehouse query, and when the warehouse is down an older answer comes back labelled with
its age, so the bot can say "figures as of ...".

    python3 examples/chatbot.py --url http://127.0.0.1:8080 sales_by_region quarter=Q4 year=2026

Exit 0 with the answer; 1 with the sidecar's error (its JSON `error` and `hint`); 2 on bad usage.
Python's standard library only.
"""

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request


class SidecarError(Exception):
    """The sidecar answered with an error (its JSON body), or could not be reached."""


def get_sales_data(base_url, query, params, timeout=30.0):
    """The answer to catalog query `query` with `params` (a dict), as the sidecar's JSON."""
    url = "{}/v1/answers/{}".format(
        base_url.rstrip("/"), urllib.parse.quote(query, safe="")
    )
    if params:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        try:
            body = json.load(e)
            message = body.get("error", "")
            hint = body.get("hint", "")
        except ValueError:
            message, hint = e.reason, ""
        raise SidecarError("{} {}: {}{}".format(
            e.code, e.reason, message, " ({})".format(hint) if hint else ""))
    except (urllib.error.URLError, OSError) as e:
        raise SidecarError("cannot reach the sidecar at {}: {}".format(base_url, e))


def describe(answer):
    """What the bot says about how current the figures are."""
    if answer["freshness"] == "fresh":
        return "current figures (batch {})".format(answer.get("batch") or "unknown")
    return "figures as of {} ({}; {:.0f} s old)".format(
        answer["computed_at"], answer.get("reason") or "stale", answer["age_ms"] / 1000.0)


def main(argv):
    parser = argparse.ArgumentParser(description="Ask the freshcache sidecar one question.")
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the sidecar's address")
    parser.add_argument("query", help="a catalog query, e.g. sales_by_region")
    parser.add_argument("params", nargs="*", metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    params = {}
    for pair in args.params:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            parser.error("parameters are NAME=VALUE, got {!r}".format(pair))
        params[name] = value
    try:
        answer = get_sales_data(args.url, args.query, params)
    except SidecarError as e:
        print("error: {}".format(e), file=sys.stderr)
        return 1
    value = answer["value"]
    print("{} — {}".format(answer["query"], describe(answer)))
    print("\t".join(value.get("columns", [])))
    for row in value.get("rows", []):
        print("\t".join(str(cell) for cell in row))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
