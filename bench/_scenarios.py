"""What happens in the simulated services' world during a benchmark, and the webhooks they send about it.

Runs inside the services' process (`bench._stack.Services.ask`). Each scenario changes the world the way a
real event would, sends the webhooks a real service sends, and returns what the database must then hold.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from simulators import overseerr, plex, radarr, sonarr, tautulli
from simulators.demo import DemoWorld, history_item
from simulators.plex_library import EPISODE, MOVIE, SHOW

Send = Callable[[], httpx.Response]


def _plex_new(world: DemoWorld, url: str, with_section: bool, rating_keys: list[str]) -> Send:
    """A new movie in Plex, and its library.new: as PMS sends it, or as the seed guide's curl does."""
    library = world.library
    with world.lock:
        section = next(s for s in library.sections.values() if s.type == MOVIE)
        item = library.add_movie(section.key, at=int(time.time()))
    rating_keys.append(str(item.rating_key))
    if with_section:
        return lambda: plex.send_library_new(url, item, library=library)
    body = f'{{"event":"library.new","Metadata":{{"ratingKey":"{item.rating_key}"}}}}'
    return lambda: httpx.post(url, files={"payload": (None, body)}, timeout=30)


def mixed_burst(world: DemoWorld, gateway: str, seconds: float, seed: int = 3) -> dict[str, Any]:
    """150 deliveries of all five services in about `seconds`:
    - 40 Plex `library.new` of 40 new movies, half with their section and half by rating key only;
    - 40 Sonarr `Download`s: 10 episodes each of 4 series;
    - 20 Radarr `Download`s of 20 movies;
    - 30 Tautulli playback stops of 15 items (two plays each);
    - 20 Overseerr notifications: 10 requests approved, then available.
    """
    rng = random.Random(seed)
    rating_keys: list[str] = []
    sends: list[tuple[str, Send]] = []
    for n in range(40):
        sends.append(("plex", _plex_new(world, f"{gateway}/api/webhooks/plex", n % 2 == 0, rating_keys)))
    series = [
        s
        for s in world.series
        if any(i.title == s["title"] for i in world.library.items.values() if i.type == SHOW)
    ][:4]
    for show in series:
        for episode in range(1, 11):
            sends.append(
                (
                    "sonarr",
                    lambda s=show, e=episode: sonarr.send_download(f"{gateway}/api/webhooks/sonarr", s, 1, e),
                )
            )
    movies = world.movies[:20]
    for movie in movies:
        sends.append(("radarr", lambda m=movie: radarr.send_download(f"{gateway}/api/webhooks/radarr", m)))
    items = rng.sample([i for i in world.library.items.values() if i.type in (MOVIE, EPISODE)], 15)
    plays = []
    with world.lock:
        for n in range(30):
            item = history_item(world.library, items[n % 15])
            plays.append(
                world.history.add_play(item, started=int(time.time()) - 7200 - n, percent_complete=95)
            )
    for play in plays:
        sends.append(
            (
                "tautulli",
                lambda p=play: tautulli.send_webhook(
                    f"{gateway}/api/webhooks/tautulli", p, server_machine_id=world.library.machine_identifier
                ),
            )
        )
    requests = overseerr.generate_requests(10, seed=seed)
    notify = f"{gateway}/api/webhooks/overseerr"
    approvals: dict[int, tuple[str, Send]] = {}
    for request in requests:
        approvals[request["id"]] = (
            "overseerr",
            lambda r=request: overseerr.send_notification(notify, "MEDIA_APPROVED", r),
        )
        sends.append(approvals[request["id"]])
    rng.shuffle(sends)
    for request in requests:  # each request's availability somewhere after its approval
        after = sends.index(approvals[request["id"]]) + 1
        available = lambda r=request: overseerr.send_notification(notify, "MEDIA_AVAILABLE", r)  # noqa: E731
        sends.insert(rng.randint(after, len(sends)), ("overseerr", available))

    started = time.time()
    offsets = sorted(rng.uniform(0, seconds) for _ in sends)
    statuses: list[int] = []
    lock = threading.Lock()

    def deliver(send: Send) -> None:
        code = send().status_code
        with lock:
            statuses.append(code)

    threads = []
    for offset, (_, send) in zip(offsets, sends, strict=True):
        time.sleep(max(0.0, started + offset - time.time()))
        thread = threading.Thread(target=deliver, args=(send,))  # senders do not wait for each other
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(60)
    return {
        "deliveries": len(sends),
        "by_source": {
            s: sum(1 for k, _ in sends if k == s)
            for s in ("plex", "sonarr", "radarr", "tautulli", "overseerr")
        },
        "statuses": sorted(set(statuses)),
        "accepted": statuses.count(202),
        "first_sent": started,
        "last_sent": time.time(),
        "rating_keys": rating_keys,
        "sonarr_ids": [s["id"] for s in series],
        "radarr_ids": [m["id"] for m in movies],
        "play_ids": [p.row_id for p in plays],
        "request_ids": [r["id"] for r in requests],
    }


def single_delivery(world: DemoWorld, gateway: str) -> dict[str, Any]:
    """One new movie and its `library.new`, as PMS sends it: what an idle stack does with one delivery."""
    rating_keys: list[str] = []
    send = _plex_new(world, f"{gateway}/api/webhooks/plex", True, rating_keys)
    sent_at = time.time()
    response = send()
    return {
        "status": response.status_code,
        "id": response.json().get("id"),
        "rating_key": rating_keys[0],
        "sent_at": sent_at,
    }
