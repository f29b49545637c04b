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
from simulators.demo import ALICE, ALICE_SECRET, BOB, BOB_SECRET, DemoWorld, history_item
from simulators.plex_library import EPISODE, MOVIE, SHOW

Send = Callable[[], httpx.Response]


def _plex_new(
    world: DemoWorld, url: str, with_section: bool, rating_keys: list[str], secret: str | None = None
) -> Send:
    """A new movie in Plex, and its library.new: as PMS sends it (with its `Server.uuid`), or as the seed
    guide's curl does (the rating key only). A user's webhook secret travels as `?token=`, as Plex's must."""
    library = world.library
    with world.lock:
        section = next(s for s in library.sections.values() if s.type == MOVIE)
        item = library.add_movie(section.key, at=int(time.time()))
    rating_keys.append(str(item.rating_key))
    if with_section:
        return lambda: plex.send_library_new(url, item, secret, library=library)
    body = f'{{"event":"library.new","Metadata":{{"ratingKey":"{item.rating_key}"}}}}'
    params = {"token": secret} if secret else None
    return lambda: httpx.post(url, params=params, files={"payload": (None, body)}, timeout=30)


def _bearer(secret: str | None) -> dict[str, str] | None:
    return {"Authorization": f"Bearer {secret}"} if secret else None


def mixed_burst(
    world: DemoWorld, gateway: str, seconds: float, seed: int = 3, bob: DemoWorld | None = None
) -> dict[str, Any]:
    """150 deliveries of all five services in about `seconds`, from two SmartPlex users (as `make run`'s
    demo has them): Alice, the owner the settings make, and Bob, whose rows SmartPlex holds. Each user's
    deliveries carry their webhook secret (Plex's as `?token=`, the others' as a bearer token):
    - 40 Plex `library.new` of 40 new movies, 20 in each user's Plex, half with their section and
      `Server.uuid`, half by rating key only;
    - 40 Sonarr `Download`s: 10 episodes each of 4 of Alice's series (Bob has no Sonarr);
    - 20 Radarr `Download`s: 10 movies of each user's Radarr;
    - 30 Tautulli playback stops, 15 of each user's (8 items each, one or two plays each);
    - 20 Overseerr notifications: 10 of Alice's requests approved, then available (Bob has no Overseerr).
    With `bob` None, every delivery is Alice's (without secrets: a local client is the owner).
    """
    rng = random.Random(seed)
    users = [("alice", world, ALICE_SECRET if bob else None)]
    if bob is not None:
        users.append(("bob", bob, BOB_SECRET))
    share = len(users)
    expected: dict[str, dict[str, Any]] = {}
    sends: list[tuple[str, Send]] = []
    for label, user_world, secret in users:
        rating_keys: list[str] = []
        headers = _bearer(secret)
        plex_url = f"{gateway}/api/webhooks/plex"
        for n in range(40 // share):
            sends.append(("plex", _plex_new(user_world, plex_url, n % 2 == 0, rating_keys, secret)))
        movies = user_world.movies[: 20 // share]
        for movie in movies:
            radarr_url = f"{gateway}/api/webhooks/radarr"
            sends.append(
                ("radarr", lambda m=movie, u=radarr_url, h=headers: radarr.send_download(u, m, headers=h))
            )
        playable = [i for i in user_world.library.items.values() if i.type in (MOVIE, EPISODE)]
        items = rng.sample(playable, 15 if share == 1 else 8)
        plays = []
        with user_world.lock:
            for n in range(30 // share):
                item = history_item(user_world.library, items[n % len(items)])
                plays.append(
                    user_world.history.add_play(
                        item, started=int(time.time()) - 7200 - n, percent_complete=95
                    )
                )
        machine = user_world.library.machine_identifier
        for play in plays:
            sends.append(
                (
                    "tautulli",
                    lambda p=play, m=machine, h=headers: tautulli.send_webhook(
                        f"{gateway}/api/webhooks/tautulli", p, server_machine_id=m, headers=h
                    ),
                )
            )
        expected[label] = {
            "email": ALICE if label == "alice" else BOB,
            "rating_keys": rating_keys,
            "sonarr_ids": [],
            "radarr_ids": [m["id"] for m in movies],
            "play_ids": [p.row_id for p in plays],
            "request_ids": [],
        }
    alice_secret = users[0][2]
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
                    lambda s=show, e=episode: sonarr.send_download(
                        f"{gateway}/api/webhooks/sonarr", s, 1, e, headers=_bearer(alice_secret)
                    ),
                )
            )
    requests = overseerr.generate_requests(10, seed=seed)
    notify = f"{gateway}/api/webhooks/overseerr"
    authorization = f"Bearer {alice_secret}" if alice_secret else None
    approvals: dict[int, tuple[str, Send]] = {}
    for request in requests:
        approvals[request["id"]] = (
            "overseerr",
            lambda r=request: overseerr.send_notification(
                notify, "MEDIA_APPROVED", r, authorization=authorization
            ),
        )
        sends.append(approvals[request["id"]])
    expected["alice"]["sonarr_ids"] = [s["id"] for s in series]
    expected["alice"]["request_ids"] = [r["id"] for r in requests]
    rng.shuffle(sends)
    for request in requests:  # each request's availability somewhere after its approval
        after = sends.index(approvals[request["id"]]) + 1
        available = lambda r=request: overseerr.send_notification(  # noqa: E731
            notify, "MEDIA_AVAILABLE", r, authorization=authorization
        )
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
        "users": expected,
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
