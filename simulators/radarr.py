"""A Radarr simulator: `/api/v3/movie` and `/api/v3/system/status` with X-Api-Key auth, and Radarr's
webhooks (v5) sent the way Radarr sends them: Download (with `deletedFiles` on an upgrade), MovieDelete
and MovieFileDelete. `app.state.controls`, `app.state.movies`.

Deleting through the API (`DELETE /api/v3/movie/{id}[?deleteFiles=true]`, `DELETE /api/v3/moviefile/{id}`)
changes the movie list and sends MovieDelete / MovieFileDelete (`deleteReason: manual`) to
`controls.webhook_url`, as Radarr's Connect → Webhook does."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException

from simulators._arr import create_arr_app, notify, send_arr_webhook

RADARR_VERSION = "5.28.0.10274"
_WORDS = [
    "Grand",
    "Budapest",
    "Midnight",
    "Express",
    "Silent",
    "River",
    "Paper",
    "Tigers",
    "Crimson",
    "Tide",
    "Last",
    "Orbit",
    "Hollow",
    "Crown",
    "Velvet",
    "Storm",
    "Northern",
    "Lights",
    "Open",
    "Road",
    "Glass",
    "Castle",
]


def generate_movies(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """`count` movies as `/api/v3/movie` returns them, ids 1..count, unique tmdb ids, from `seed`."""
    rng = random.Random(seed)
    tmdb_ids = rng.sample(range(10_000, 900_000), count)
    movies = []
    for index in range(count):
        movie_id = index + 1
        title = f"{rng.choice(_WORDS)} {rng.choice(_WORDS)} {movie_id}"
        year = rng.randint(1970, 2024)
        folder = f"/movies/{title} ({year})"
        has_file = index % 6 != 5
        movie: dict[str, Any] = {
            "title": title,
            "originalTitle": title,
            "originalLanguage": {"id": 1, "name": "English"},
            "sortTitle": title.lower(),
            "sizeOnDisk": 8_000_000_000 if has_file else 0,
            "status": "released",
            "overview": f"All about {title}.",
            "inCinemas": f"{year}-05-01T00:00:00Z",
            "images": [{"coverType": "poster", "url": f"/MediaCover/{movie_id}/poster.jpg"}],
            "website": "",
            "year": year,
            "hasFile": has_file,
            "youTubeTrailerId": "",
            "studio": "Simulated Pictures",
            "path": folder,
            "qualityProfileId": 1,
            "monitored": True,
            "minimumAvailability": "released",
            "isAvailable": True,
            "folderName": folder,
            "runtime": rng.randint(80, 180),
            "cleanTitle": title.lower().replace(" ", ""),
            "tmdbId": tmdb_ids[index],
            "titleSlug": str(tmdb_ids[index]),
            "rootFolderPath": "/movies/",
            "genres": ["Drama"],
            "tags": [],
            "added": "2024-01-01T00:00:00Z",
            "ratings": {"tmdb": {"votes": rng.randint(10, 9000), "value": round(rng.uniform(5, 9), 1)}},
            "popularity": round(rng.uniform(1, 100), 3),
            "statistics": {"movieFileCount": int(has_file), "sizeOnDisk": 8_000_000_000 if has_file else 0},
            "id": movie_id,
        }
        if index % 4 != 3:
            movie["imdbId"] = f"tt{rng.randint(100_000, 9_999_999):07d}"
        if has_file:
            movie["movieFile"] = {
                "movieId": movie_id,
                "relativePath": f"{title} ({year}) Bluray-1080p.mkv",
                "path": f"{folder}/{title} ({year}) Bluray-1080p.mkv",
                "size": 8_000_000_000,
                "dateAdded": "2024-01-02T00:00:00Z",
                "quality": {"quality": {"id": 7, "name": "Bluray-1080p"}, "revision": {"version": 1}},
                "indexerFlags": 0,
                "id": movie_id * 10,
            }
        movies.append(movie)
    return movies


def create_radarr_app(
    movies: Sequence[dict[str, Any]] | None = None,
    *,
    api_key: str = "radarr-api-key",
    count: int = 25,
    seed: int = 0,
    failure_rate: float = 0.0,
    latency: float = 0.0,
) -> FastAPI:
    """The simulator as an ASGI app; `movies` defaults to `generate_movies(count, seed)`."""
    items = list(movies) if movies is not None else generate_movies(count, seed)
    app = create_arr_app(
        "Radarr",
        "movie",
        "movies",
        items,
        {
            "appName": "Radarr",
            "instanceName": "Radarr",
            "version": RADARR_VERSION,
            "isDocker": True,
            "osName": "ubuntu",
            "branch": "master",
            "authentication": "forms",
            "urlBase": "",
            "runtimeName": ".NET",
        },
        api_key=api_key,
        seed=seed,
        failure_rate=failure_rate,
        latency=latency,
        delete_payload=lambda movie, files: movie_delete_payload(movie, deleted_files=files),
    )

    @app.delete("/api/v3/moviefile/{file_id}")
    def delete_movie_file(file_id: int) -> dict[str, Any]:
        for movie in app.state.movies:
            if movie.get("movieFile", {}).get("id") == file_id:
                payload = movie_file_delete_payload(movie, reason="manual")
                del movie["movieFile"]
                movie.update(hasFile=False, sizeOnDisk=0)
                movie["statistics"].update(movieFileCount=0, sizeOnDisk=0)
                notify(app, payload)
                return {}
        raise HTTPException(404, detail="NotFound")

    return app


def webhook_movie(movie: dict[str, Any]) -> dict[str, Any]:
    """The `movie` object of Radarr's webhooks (WebhookMovie)."""
    return {
        "id": movie["id"],
        "title": movie["title"],
        "year": movie.get("year", 0),
        "releaseDate": f"{movie.get('year', 1970)}-07-31",
        "folderPath": movie.get("path"),
        "tmdbId": movie.get("tmdbId", 0),
        "imdbId": movie.get("imdbId"),
        "overview": movie.get("overview"),
        "genres": movie.get("genres", []),
        "images": movie.get("images", []),
        "tags": [],
        "originalLanguage": movie.get("originalLanguage"),
    }


def webhook_movie_file(
    movie: dict[str, Any], quality: str = "Bluray-1080p", file_id: int | None = None
) -> dict[str, Any]:
    """A `movieFile` of Radarr's webhooks (WebhookMovieFile): the movie's file, or one of that quality."""
    name = f"{movie['title']} ({movie.get('year', 0)}) {quality}.mkv"
    return {
        "id": file_id or movie.get("movieFile", {}).get("id") or movie["id"] * 10,
        "relativePath": name,
        "path": f"{movie.get('path')}/{name}",
        "quality": quality,
        "qualityVersion": 1,
        "indexerFlags": "0",
        "size": movie.get("movieFile", {}).get("size", 8_000_000_000),
        "dateAdded": movie.get("movieFile", {}).get("dateAdded", "2024-01-02T00:00:00Z"),
    }


def _event(payload: dict[str, Any], event_type: str) -> dict[str, Any]:
    return {**payload, "eventType": event_type, "instanceName": "Radarr", "applicationUrl": ""}


def movie_delete_payload(movie: dict[str, Any], *, deleted_files: bool = True) -> dict[str, Any]:
    """MovieDelete: the movie left Radarr, with its files when `deleted_files` (the "Delete files" box)."""
    size = movie.get("sizeOnDisk", 0) if deleted_files else 0
    return _event(
        {"movie": webhook_movie(movie), "deletedFiles": deleted_files, "movieFolderSize": size}, "MovieDelete"
    )


def movie_file_delete_payload(movie: dict[str, Any], *, reason: str = "manual") -> dict[str, Any]:
    """MovieFileDelete; `reason` is Radarr's deleteReason: missingFromDisk, manual, upgrade,
    noLinkedEpisodes or manualOverride."""
    file = {**webhook_movie_file(movie), "recycleBinPath": f"/recycle/{movie['title']}.mkv"}
    return _event(
        {"movie": webhook_movie(movie), "movieFile": file, "deleteReason": reason}, "MovieFileDelete"
    )


def download_payload(movie: dict[str, Any], *, is_upgrade: bool = False) -> dict[str, Any]:
    """A Download webhook for `movie`, as Radarr v5 builds it; an upgrade lists the replaced file in
    `deletedFiles`."""
    ids = {"tmdbId": movie.get("tmdbId", 0), "imdbId": movie.get("imdbId")}
    new_file = webhook_movie_file(
        movie, "Remux-2160p" if is_upgrade else "Bluray-1080p", movie["id"] * 10 + 1
    )
    payload: dict[str, Any] = {
        "movie": webhook_movie(movie),
        "remoteMovie": {**ids, "title": movie["title"], "year": movie.get("year", 0)},
        "movieFile": new_file if is_upgrade else webhook_movie_file(movie),
        "isUpgrade": is_upgrade,
        "downloadClient": "qBittorrent",
        "downloadClientType": "qBittorrent",
        "downloadId": f"{movie['id']:040X}",
        "release": {
            "releaseTitle": movie["title"].replace(" ", "."),
            "indexer": "Sim",
            "size": 0,
            "indexerFlags": [],
        },
    }
    if is_upgrade:
        old = {**webhook_movie_file(movie), "recycleBinPath": f"/recycle/{movie['title']}.mkv"}
        payload["deletedFiles"] = [old]
    return _event(payload, "Download")


def send(
    url: str,
    payload: dict[str, Any],
    *,
    username: str | None = None,
    password: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST any Radarr webhook payload (see the `*_payload` builders) to `url`, exactly as Radarr would."""
    return send_arr_webhook(
        url,
        payload,
        user_agent=f"Radarr/{RADARR_VERSION} (ubuntu 22.04)",
        username=username,
        password=password,
        headers=headers,
    )


def send_download(
    url: str,
    movie: dict[str, Any],
    *,
    username: str | None = None,
    password: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a Download webhook for `movie` to `url`, exactly as Radarr would."""
    return send(url, download_payload(movie), username=username, password=password, headers=headers)
