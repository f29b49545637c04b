"""A Sonarr simulator: `/api/v3/series` and `/api/v3/system/status` with X-Api-Key auth, and Sonarr's
Download webhook (v4 `WebhookImportPayload`) sent the way Sonarr sends it.

Series carry Sonarr's own field names and its habits: `tmdbId` is 0 when unknown and `imdbId` is
absent; statistics are filled. The app's `Controls` (counter, faults) are `app.state.controls`, the
series list `app.state.series`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from simulators._arr import create_arr_app, send_arr_webhook

SONARR_VERSION = "4.0.14.2939"
_WORDS = [
    "Harbor",
    "Lights",
    "Northern",
    "Signal",
    "Quiet",
    "Orchard",
    "Glass",
    "Empire",
    "Last",
    "Frontier",
    "Paper",
    "Moon",
    "Iron",
    "Coast",
    "Silver",
    "Line",
    "Hidden",
    "Valley",
    "Broken",
    "Compass",
    "Winter",
    "Garden",
    "Red",
    "Horizon",
    "Lost",
    "Station",
    "Golden",
    "Hour",
]
_NETWORKS = ("HBO", "AMC", "BBC One", "Netflix", "FX", "Apple TV+")


def generate_series(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """`count` series as `/api/v3/series` returns them, ids 1..count, unique tvdb ids, from `seed`."""
    rng = random.Random(seed)
    tvdb_ids = rng.sample(range(70_000, 450_000), count)
    added = datetime(2023, 1, 1, tzinfo=UTC)
    series = []
    for index in range(count):
        series_id = index + 1
        title = f"{rng.choice(_WORDS)} {rng.choice(_WORDS)} {series_id}"
        seasons = rng.randint(1, 6)
        episodes = seasons * rng.randint(6, 13)
        files = rng.randint(0, episodes)
        year = rng.randint(1995, 2024)
        item: dict[str, Any] = {
            "title": title,
            "alternateTitles": [],
            "sortTitle": title.lower(),
            "status": rng.choice(("continuing", "ended")),
            "ended": False,
            "overview": f"The story of {title}.",
            "network": rng.choice(_NETWORKS),
            "airTime": "21:00",
            "images": [{"coverType": "poster", "url": f"/MediaCover/{series_id}/poster.jpg"}],
            "originalLanguage": {"id": 1, "name": "English"},
            "seasons": [
                {"seasonNumber": n, "monitored": True, "statistics": {"episodeCount": episodes // seasons}}
                for n in range(1, seasons + 1)
            ],
            "year": year,
            "path": f"/tv/{title}",
            "qualityProfileId": 1,
            "seasonFolder": True,
            "monitored": True,
            "monitorNewItems": "all",
            "useSceneNumbering": False,
            "runtime": 45,
            "tvdbId": tvdb_ids[index],
            "tvRageId": 0,
            "tvMazeId": rng.randint(1, 60_000),
            "tmdbId": 0 if index % 7 == 6 else rng.randint(1_000, 250_000),
            "firstAired": f"{year}-09-0{rng.randint(1, 9)}T00:00:00Z",
            "seriesType": "standard",
            "cleanTitle": title.lower().replace(" ", ""),
            "titleSlug": title.lower().replace(" ", "-"),
            "rootFolderPath": "/tv/",
            "genres": ["Drama"],
            "tags": [],
            "added": (added + timedelta(days=index)).isoformat().replace("+00:00", "Z"),
            "ratings": {"votes": rng.randint(10, 5000), "value": round(rng.uniform(5, 9.5), 1)},
            "statistics": {
                "seasonCount": seasons,
                "episodeFileCount": files,
                "episodeCount": episodes,
                "totalEpisodeCount": episodes,
                "sizeOnDisk": files * 1_500_000_000,
                "releaseGroups": ["NTb"],
                "percentOfEpisodes": round(100 * files / episodes, 1),
            },
            "languageProfileId": 1,
            "id": series_id,
        }
        if index % 5 != 4:  # Sonarr leaves imdbId out when it does not know it
            item["imdbId"] = f"tt{rng.randint(100_000, 9_999_999):07d}"
        series.append(item)
    return series


def create_sonarr_app(
    series: Sequence[dict[str, Any]] | None = None,
    *,
    api_key: str = "sonarr-api-key",
    count: int = 25,
    seed: int = 0,
    failure_rate: float = 0.0,
    latency: float = 0.0,
) -> FastAPI:
    """The simulator as an ASGI app; `series` defaults to `generate_series(count, seed)`."""
    items = list(series) if series is not None else generate_series(count, seed)
    return create_arr_app(
        "Sonarr",
        "series",
        "series",
        items,
        {
            "appName": "Sonarr",
            "instanceName": "Sonarr",
            "version": SONARR_VERSION,
            "buildTime": "2025-01-01T00:00:00Z",
            "isDebug": False,
            "isProduction": True,
            "isAdmin": False,
            "isUserInteractive": False,
            "startupPath": "/app/sonarr/bin",
            "appData": "/config",
            "osName": "ubuntu",
            "osVersion": "22.04",
            "isDocker": True,
            "branch": "main",
            "authentication": "forms",
            "urlBase": "",
            "runtimeVersion": "6.0.35",
            "runtimeName": ".NET",
        },
        api_key=api_key,
        seed=seed,
        failure_rate=failure_rate,
        latency=latency,
    )


def download_payload(
    series: dict[str, Any], season: int = 1, episode: int = 1, *, is_upgrade: bool = False
) -> dict[str, Any]:
    """A Download (import) webhook for one episode of `series`, as Sonarr v4 builds it."""
    path = f"{series['path']}/Season {season:02d}/{series['title']} - S{season:02d}E{episode:02d}.mkv"
    payload: dict[str, Any] = {
        "series": {
            "id": series["id"],
            "title": series["title"],
            "titleSlug": series.get("titleSlug"),
            "path": series["path"],
            "tvdbId": series.get("tvdbId", 0),
            "tvMazeId": series.get("tvMazeId", 0),
            "tmdbId": series.get("tmdbId", 0),
            "imdbId": series.get("imdbId"),
            "type": series.get("seriesType", "standard"),
            "year": series.get("year", 0),
            "genres": series.get("genres", []),
            "images": series.get("images", []),
            "tags": [],
            "originalLanguage": series.get("originalLanguage"),
        },
        "episodes": [
            {
                "id": series["id"] * 1000 + season * 100 + episode,
                "episodeNumber": episode,
                "seasonNumber": season,
                "title": f"Episode {episode}",
                "airDate": "2024-03-01",
                "airDateUtc": "2024-03-02T02:00:00Z",
                "seriesId": series["id"],
                "tvdbId": 9_000_000 + series["id"] * 1000 + episode,
            }
        ],
        "episodeFile": {
            "id": series["id"] * 10_000 + episode,
            "relativePath": path.rsplit("/", 2)[-2] + "/" + path.rsplit("/", 1)[-1],
            "path": path,
            "quality": "WEBDL-1080p",
            "qualityVersion": 1,
            "releaseGroup": "NTb",
            "size": 1_500_000_000,
            "dateAdded": "2024-03-02T03:00:00Z",
            "languages": [{"id": 1, "name": "English"}],
            "mediaInfo": {"audioChannels": 5.1, "audioCodec": "EAC3", "videoCodec": "h264", "height": 1080},
        },
        "isUpgrade": is_upgrade,
        "downloadClient": "qBittorrent",
        "downloadClientType": "qBittorrent",
        "downloadId": f"{series['id']:040X}",
        "release": {
            "releaseTitle": f"{series['title']}.S{season:02d}E{episode:02d}",
            "releaseType": "singleEpisode",
        },
        "eventType": "Download",
        "instanceName": "Sonarr",
        "applicationUrl": "",
    }
    return payload


def send_download(
    url: str,
    series: dict[str, Any],
    season: int = 1,
    episode: int = 1,
    *,
    username: str | None = None,
    password: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a Download webhook for one episode to `url`, exactly as Sonarr would."""
    return send_arr_webhook(
        url,
        download_payload(series, season, episode),
        user_agent=f"Sonarr/{SONARR_VERSION} (ubuntu 22.04)",
        username=username,
        password=password,
        headers=headers,
    )
