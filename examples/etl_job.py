#!/usr/bin/env python3
"""The end of the hourly ETL job: tell freshcache that batch B finished.

The sidecar checks the warehouse's update_log for which tables really reached the batch, moves
only those to new versions (a partial load leaves the others as they were) and reports the rest.
Running it twice, late or out of order changes nothing more.

    python3 examples/etl_job.py --url http://127.0.0.1:8080 --token-file /etc/freshcache/token \\
        --batch 20261126-10:00 [--table sales --table customers]

The sidecar must run with --admin-token-file (the same file). Exit 0 when every table reached the
batch, 3 when some are behind (the report says which), 1 on an error. Standard library only.

(A job that publishes the original plain message on Redis — `PUBLISH warehouse_updated
'{"timestamp": ..., "tables": [...]}'` — keeps working too: instances check update_log for it.)
"""

import argparse
import json
import sys
import urllib.error
import urllib.request


def etl_complete(base_url, token, batch, tables, actor="etl-job", timeout=60.0):
    """POST /v1/etl-complete; returns the sidecar's report."""
    body = json.dumps({"batch": batch, "tables": tables}).encode()
    request = urllib.request.Request(
        base_url.rstrip("/") + "/v1/etl-complete",
        data=body,
        method="POST",
        headers={
            "Authorization": "Bearer " + token,
            "Content-Type": "application/json",
            "X-Freshcache-Actor": actor,
        },
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def main(argv):
    parser = argparse.ArgumentParser(description="Report a finished ETL batch to freshcache.")
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--batch", required=True, help="YYYYMMDD-HH:MM")
    parser.add_argument("--table", action="append", default=[], help="expected tables (all if none)")
    args = parser.parse_args(argv)
    with open(args.token_file) as f:
        token = f.readline().strip()
    try:
        report = etl_complete(args.url, token, args.batch, args.table)
    except urllib.error.HTTPError as e:
        try:
            message = json.load(e).get("error", e.reason)
        except ValueError:
            message = e.reason
        print("error: {} {}".format(e.code, message), file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as e:
        print("error: cannot reach the sidecar: {}".format(e), file=sys.stderr)
        return 1
    print("batch {}: verified {}; bumped {}".format(
        report["batch"], ", ".join(report["verified"]) or "none",
        ", ".join(report["bumped"]) or "none"))
    for behind in report["behind"]:
        print("behind: {} ({})".format(behind["table"], behind["reason"]))
    return 3 if report["behind"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
