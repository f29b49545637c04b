"""A Sonarr simulator: `/api/v3/series`, `/api/v3/episodefile` and `/api/v3/system/status` with X-Api-Key
auth, and Sonarr's v4 webhooks sent the way Sonarr sends them: Download (`WebhookImportPayload`, with
`deletedFiles` on an upgrade), SeriesDelete and EpisodeFileDelete.

Series carry Sonarr's own field names and its habits: `tmdbId` is 0 when unknown and `imdbId` is
absent; statistics are filled. Each series has `statistics.episodeFileCount` episode files, the first
episodes of its seasons in order. The app's `Controls` (counter, faults) are `app.state.controls`, the
series list `app.state.series`, the episode files `app.state.episode_files`.

Deleting through the API (`DELETE /api/v3/series/{id}[?deleteFiles=true]`,
`DELETE /api/v3/episodefile/{id}`) changes that state and sends SeriesDelete / EpisodeFileDelete
(`deleteReason: manual`) to `controls.webhook_url`, as Sonarr's Connect → Webhook does.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException, Query

from simulators._arr import create_arr_app, notify, send_arr_webhook

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

    def series_deleted(one: dict[str, Any], deleted_files: bool) -> dict[str, Any]:
        app.state.episode_files = [f for f in app.state.episode_files if f["seriesId"] != one["id"]]
        return series_delete_payload(one, deleted_files=deleted_files)

    app = create_arr_app(
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
        delete_payload=series_deleted,
    )
    app.state.episode_files = [f for one in items for f in generate_episode_files(one)]

    @app.get("/api/v3/episodefile")
    def episode_files(series_id: int = Query(alias="seriesId")) -> list[dict[str, Any]]:
        return [f for f in app.state.episode_files if f["seriesId"] == series_id]

    @app.delete("/api/v3/episodefile/{file_id}")
    def delete_episode_file(file_id: int) -> dict[str, Any]:
        file = next((f for f in app.state.episode_files if f["id"] == file_id), None)
        one = next((s for s in app.state.series if file and s["id"] == file["seriesId"]), None)
        if file is None or one is None:
            raise HTTPException(404, detail="NotFound")
        app.state.episode_files.remove(file)
        statistics = one["statistics"]
        statistics.update(episodeFileCount=statistics["episodeFileCount"] - 1)
        statistics.update(sizeOnDisk=statistics["sizeOnDisk"] - file["size"])
        season, episode = _numbers(file)
        notify(app, episode_file_delete_payload(one, season, episode, reason="manual"))
        return {}

    return app


def _file_id(series: dict[str, Any], season: int, episode: int) -> int:
    return series["id"] * 10_000 + season * 100 + episode


def _relative_path(series: dict[str, Any], season: int, episode: int, quality: str) -> str:
    return f"Season {season:02d}/{series['title']} - S{season:02d}E{episode:02d} {quality}.mkv"


def _numbers(file: dict[str, Any]) -> tuple[int, int]:
    number = file["id"] % 10_000
    return number // 100, number % 100


def generate_episode_files(series: dict[str, Any]) -> list[dict[str, Any]]:
    """The episode files of `series` as `/api/v3/episodefile?seriesId=` returns them."""
    files, left = [], series["statistics"]["episodeFileCount"]
    for season in series["seasons"]:
        number, count = season["seasonNumber"], season["statistics"]["episodeCount"]
        for episode in range(1, min(count, left) + 1):
            relative = _relative_path(series, number, episode, "WEBDL-1080p")
            files.append(
                {
                    "seriesId": series["id"],
                    "seasonNumber": number,
                    "relativePath": relative,
                    "path": f"{series['path']}/{relative}",
                    "size": 1_500_000_000,
                    "dateAdded": "2024-03-02T03:00:00Z",
                    "quality": {"quality": {"id": 3, "name": "WEBDL-1080p"}, "revision": {"version": 1}},
                    "id": _file_id(series, number, episode),
                }
            )
        left -= min(count, left)
    return files


def webhook_series(series: dict[str, Any]) -> dict[str, Any]:
    """The `series` object of Sonarr's webhooks (WebhookSeries)."""
    return {
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
    }


def webhook_episode(series: dict[str, Any], season: int, episode: int) -> dict[str, Any]:
    return {
        "id": series["id"] * 1000 + season * 100 + episode,
        "episodeNumber": episode,
        "seasonNumber": season,
        "title": f"Episode {episode}",
        "airDate": "2024-03-01",
        "airDateUtc": "2024-03-02T02:00:00Z",
        "seriesId": series["id"],
        "tvdbId": 9_000_000 + series["id"] * 1000 + episode,
    }


def webhook_episode_file(
    series: dict[str, Any],
    season: int,
    episode: int,
    quality: str = "WEBDL-1080p",
    *,
    file_id: int | None = None,
) -> dict[str, Any]:
    """An `episodeFile` of Sonarr's webhooks (WebhookEpisodeFile)."""
    relative = _relative_path(series, season, episode, quality)
    return {
        "id": file_id or _file_id(series, season, episode),
        "relativePath": relative,
        "path": f"{series['path']}/{relative}",
        "quality": quality,
        "qualityVersion": 1,
        "releaseGroup": "NTb",
        "size": 1_500_000_000,
        "dateAdded": "2024-03-02T03:00:00Z",
        "languages": [{"id": 1, "name": "English"}],
        "mediaInfo": {"audioChannels": 5.1, "audioCodec": "EAC3", "videoCodec": "h264", "height": 1080},
    }


def _event(payload: dict[str, Any], event_type: str) -> dict[str, Any]:
    return {**payload, "eventType": event_type, "instanceName": "Sonarr", "applicationUrl": ""}


def series_delete_payload(series: dict[str, Any], *, deleted_files: bool = True) -> dict[str, Any]:
    """SeriesDelete: the series left Sonarr, with its files when `deleted_files` ("Delete files")."""
    return _event({"series": webhook_series(series), "deletedFiles": deleted_files}, "SeriesDelete")


def episode_file_delete_payload(
    series: dict[str, Any], season: int, episode: int, *, reason: str = "manual"
) -> dict[str, Any]:
    """EpisodeFileDelete; `reason` is Sonarr's deleteReason: missingFromDisk, manual, upgrade (sent only
    with "On Episode File Delete For Upgrade"), noLinkedEpisodes or manualOverride."""
    file = webhook_episode_file(series, season, episode)
    file["recycleBinPath"] = f"/recycle/{series['title']}/{file['relativePath']}"
    payload = {
        "series": webhook_series(series),
        "episodes": [webhook_episode(series, season, episode)],
        "episodeFile": file,
        "deleteReason": reason,
    }
    return _event(payload, "EpisodeFileDelete")


def download_payload(
    series: dict[str, Any], season: int = 1, episode: int = 1, *, is_upgrade: bool = False
) -> dict[str, Any]:
    """A Download (import) webhook for one episode of `series`, as Sonarr v4 builds it; an upgrade lists
    the replaced file in `deletedFiles`."""
    old = webhook_episode_file(series, season, episode)
    new = webhook_episode_file(series, season, episode, "Bluray-1080p", file_id=old["id"] + 1_000_000)
    payload: dict[str, Any] = {
        "series": webhook_series(series),
        "episodes": [webhook_episode(series, season, episode)],
        "episodeFile": new if is_upgrade else old,
        "isUpgrade": is_upgrade,
        "downloadClient": "qBittorrent",
        "downloadClientType": "qBittorrent",
        "downloadId": f"{series['id']:040X}",
        "release": {
            "releaseTitle": f"{series['title']}.S{season:02d}E{episode:02d}",
            "releaseType": "singleEpisode",
        },
    }
    if is_upgrade:  # the replaced file, as far as Sonarr still knows it
        kept = ("id", "relativePath", "path", "quality", "qualityVersion", "size", "dateAdded")
        replaced = {key: old[key] for key in kept}
        payload["deletedFiles"] = [
            {**replaced, "recycleBinPath": f"/recycle/{series['title']}/{old['relativePath']}"}
        ]
    return _event(payload, "Download")


def send(
    url: str,
    payload: dict[str, Any],
    *,
    username: str | None = None,
    password: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST any Sonarr webhook payload (see the `*_payload` builders) to `url`, exactly as Sonarr would."""
    return send_arr_webhook(
        url,
        payload,
        user_agent=f"Sonarr/{SONARR_VERSION} (ubuntu 22.04)",
        username=username,
        password=password,
        headers=headers,
    )


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
    payload = download_payload(series, season, episode)
    return send(url, payload, username=username, password=password, headers=headers)
