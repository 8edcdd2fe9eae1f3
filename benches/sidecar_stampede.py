#!/usr/bin/env python3
"""The original stampede through the sidecar: N Python threads ask one cold question at once.

    python3 benches/sidecar_stampede.py --url http://127.0.0.1:8080 --token-file TOKEN [--clients 1000]

Prints, for the cold question and again after an invalidation of `sales`, the warehouse queries
it cost (from the sidecar's /metrics) and the clients' p50/p99/max latency. Standard library only.
"""

import argparse
import json
import threading
import time
import urllib.request

QUESTION = "/v1/answers/sales_by_region?quarter=Q4&year=2026"


def warehouse_queries(url):
    with urllib.request.urlopen(url + "/metrics") as r:
        text = r.read().decode()
    return sum(float(l.split()[-1]) for l in text.splitlines()
               if l.startswith("freshcache_warehouse_queries_total"))


def stampede(url, clients):
    barrier = threading.Barrier(clients)
    times, errors = [], []
    lock = threading.Lock()

    def ask():
        barrier.wait()
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(url + QUESTION, timeout=60) as r:
                json.load(r)
            took = time.perf_counter() - started
            with lock:
                times.append(took)
        except Exception as e:  # noqa: BLE001 - counted and shown
            with lock:
                errors.append(str(e))

    threads = [threading.Thread(target=ask) for _ in range(clients)]
    before = warehouse_queries(url)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times.sort()
    pick = lambda p: times[min(len(times) - 1, int(len(times) * p))] * 1000
    return {
        "clients": clients,
        "answered": len(times),
        "errors": len(errors),
        "warehouse_queries": warehouse_queries(url) - before,
        "p50_ms": round(pick(0.50), 1),
        "p99_ms": round(pick(0.99), 1),
        "max_ms": round(times[-1] * 1000, 1),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--token-file", required=True)
    p.add_argument("--clients", type=int, default=1000)
    a = p.parse_args()
    print(json.dumps({"round": "cold", **stampede(a.url, a.clients)}))
    token = open(a.token_file).readline().strip()
    req = urllib.request.Request(a.url + "/v1/invalidate", data=b'{"tables":["sales"]}',
                                 method="POST", headers={"Authorization": "Bearer " + token})
    urllib.request.urlopen(req).read()
    # The bump's refresh-ahead may reload the question before anyone asks; wait for it to land.
    time.sleep(1.0)
    print(json.dumps({"round": "after invalidate", **stampede(a.url, a.clients)}))


if __name__ == "__main__":
    main()
