"""The main job, end to end over HTTP: a FastAPI app (examples/fastapi_app.py)
served by uvicorn on a free loopback port, backed by a private redis-server
that this script starts and stops. It shows a miss, a hit, an ETag answered
with 304, a cached route, a rate-limited route answering 429 with its
headers, an invalidation, and the stats."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fastapi_app import create_app  # noqa: E402

from redis_cache.testing import RedisServer, free_port  # noqa: E402


def show(label: str, response: httpx.Response, elapsed: float) -> None:
    cache = response.headers.get("x-cache", "-")
    print(f"  {label:<38} {response.status_code}  {elapsed * 1000:8.1f} ms  X-Cache={cache:<4} "
          f"{response.text[:60]}")


def timed(client: httpx.Client, method: str, url: str, **kwargs: object) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    response = client.request(method, url, **kwargs)  # type: ignore[arg-type]
    return response, time.perf_counter() - start


def main() -> None:
    server = RedisServer()
    with server:
        port = free_port()
        http = uvicorn.Server(uvicorn.Config(create_app(server.url), host="127.0.0.1", port=port,
                                             log_level="warning"))
        thread = threading.Thread(target=http.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not http.started:  # a demo waiting for its server, not a test
            if time.monotonic() > deadline or not thread.is_alive():
                raise SystemExit("uvicorn did not start")
            time.sleep(0.01)
        print(f"redis-server on 127.0.0.1:{server.port}, app on http://127.0.0.1:{port}")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            print("decorated endpoint (@cache.cached, key='report:{user_id}'):")
            miss = timed(client, "GET", "/reports/7")
            show("GET /reports/7 (miss: computed)", *miss)
            hit = timed(client, "GET", "/reports/7")
            show("GET /reports/7 (hit: from Redis)", *hit)
            print(f"  speed-up: {miss[1] / hit[1]:,.0f}x")
            print("tags (@cache.cached(tags=['user:{user_id}']) on /users/5/orders and /profile):")
            for path in ("/users/5/orders", "/users/5/profile"):
                show(f"GET {path} (miss)", *timed(client, "GET", path))
                show(f"GET {path} (hit)", *timed(client, "GET", path))
            show("POST /users/5 (invalidate_tags)", *timed(client, "POST", "/users/5"))
            for path in ("/users/5/orders", "/users/5/profile"):
                show(f"GET {path} (miss again)", *timed(client, "GET", path))
            print("response middleware (CacheMiddleware on /pages):")
            first = timed(client, "GET", "/pages/about")
            show("GET /pages/about", *first)
            etag = first[0].headers["etag"]
            show("GET /pages/about again", *timed(client, "GET", "/pages/about"))
            show(f"GET with If-None-Match {etag[:12]}...",
                 *timed(client, "GET", "/pages/about", headers={"If-None-Match": etag}))
            print("cached route (@cache.cached_route: the response bytes, no JSON work on a hit):")
            show("GET /products/3 (miss)", *timed(client, "GET", "/products/3"))
            show("GET /products/3 (hit)", *timed(client, "GET", "/products/3"))
            print("rate-limited route (Depends(RateLimit('3/minute'))):")
            for attempt in range(1, 5):
                response, elapsed = timed(client, "POST", "/login")
                show(f"POST /login #{attempt}", response, elapsed)
                print(f"    RateLimit-Policy: {response.headers.get('ratelimit-policy')}  "
                      f"RateLimit: {response.headers.get('ratelimit')}  "
                      f"Retry-After: {response.headers.get('retry-after', '-')}")
            print("invalidation (@cache.invalidate('report:{user_id}')):")
            show("POST /reports/7/refresh", *timed(client, "POST", "/reports/7/refresh"))
            show("GET /reports/7 (miss again)", *timed(client, "GET", "/reports/7"))
            print("health and stats:")
            show("GET /health", *timed(client, "GET", "/health"))
            stats = client.get("/health/stats").json()
            redis = stats["redis"]
            print(f"  GET /health/stats: redis {redis['version']}, {redis['used_memory_human']} "
                  f"used, keyspace hits {redis['keyspace_hits']} / misses {redis['keyspace_misses']}")
            for name, figures in stats.get("decorators", {}).items():
                print(f"  {name.rsplit('.', 1)[-1]}: {figures}")
            metrics = client.get("/health/metrics").text.splitlines()
            wanted = ("redis_cache_client_requests_total", "redis_cache_function_hits_total")
            print(f"  GET /health/metrics: {len(metrics)} lines of Prometheus text, e.g.")
            for line in [m for m in metrics if m.startswith(wanted)][:4]:
                print(f"    {line}")
        http.should_exit = True
        thread.join(10)
    print("app stopped, private redis-server stopped")


if __name__ == "__main__":
    main()
