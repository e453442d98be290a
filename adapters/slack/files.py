"""Slack file shares as the core's attachments, and their downloads.

A message's `files` become `Attachment`s whose `ref` is the file id. Downloads go to
`url_private` with the bot token as Bearer (the `files:read` scope): the event's URL
when it came with one, else `files.info`'s (a replayed turn, or a file object Slack
sent partly, `file_access: check_file_info`). Without the token Slack answers 200
with an HTML sign-in page, not an error: such an answer is a refusal here.

The token goes only to Slack's file host (`files.slack.com`) and the Web API's host
(`SLACK_API_URL`, a fake's in tests): a link naming any other host is not fetched,
and logged. Redirects are followed here, hop by hop (at most `MAX_REDIRECTS`), so a
hop to another host goes without the token.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from yarl import URL

from bot.contract import Attachment, FetchFailed
from bot.files.origins import Origins, host_of
from bot.lru import Lru

log = logging.getLogger(__name__)

KNOWN_URLS = 10_000  # file id -> url_private, for files seen in events (saves a files.info)
CHUNK = 64 * 1024
FILE_HOST = "https://files.slack.com"  # where url_private points
MAX_REDIRECTS = 5
REDIRECTS = {301, 302, 303, 307, 308}

FILES_INFO_ERRORS = {
    "file_not_found": "it was deleted",
    "file_deleted": "it was deleted",
    "missing_scope": "the app lacks the files:read scope",
    "not_allowed_token_type": "the app lacks the files:read scope",
}


# Files a message shares that Slack will not serve: its `mode` says why.
UNAVAILABLE = {
    "tombstone": "it was deleted",
    "external": "it is a link to a file kept outside Slack",
}


class SlackFiles:
    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client  # its token downloads too (a rotated one included)
        self._token_hosts = Origins.of(FILE_HOST, client.base_url)
        self._urls: Lru[str, tuple[str, str]] = Lru(KNOWN_URLS)  # id -> (url, mimetype)

    def attachments(self, files: Iterable[dict[str, Any]]) -> tuple[Attachment, ...]:
        """A message's `files` as attachments; a deleted one or a link to a file kept outside
        Slack comes `unavailable`, so the answer names it and says why."""
        found: list[Attachment] = []
        for file in files:
            file_id = str(file.get("id") or "")
            if not file_id:
                continue
            unavailable = UNAVAILABLE.get(str(file.get("mode") or ""), "")
            if not unavailable:
                self._remember(file)
            size = file.get("size")
            found.append(Attachment(
                name=str(file.get("name") or file.get("title") or file_id),
                mime=str(file.get("mimetype") or ""),
                size=size if isinstance(size, int) else 0,
                ref=file_id,
                unavailable=unavailable,
            ))
        return tuple(found)

    async def fetch(self, ref: str, limit: int) -> bytes:
        """The file's bytes (a `bot.contract.FetchFile`)."""
        url, mime = self._urls.get(ref) or await self._url(ref)
        session = self._client.session  # the adapter's one pool, which every client shares
        if session is None:
            raise FetchFailed("Slack is not connected")
        if not self._token_hosts.trusts(url):
            log.warning("a Slack file's link names %s, not Slack's file host: not fetched", host_of(url))
            raise FetchFailed("its link does not point at Slack")
        for _ in range(MAX_REDIRECTS + 1):
            trusted = self._token_hosts.trusts(url)
            headers = {"Authorization": f"Bearer {self._client.token}"} if trusted else {}
            async with session.get(url, headers=headers, allow_redirects=False) as response:
                if response.status not in REDIRECTS:
                    return await _body(response, mime, limit)
                location = response.headers.get("Location", "")
                url = str(response.url.join(URL(location))) if location else ""
            if not url.startswith(("https://", "http://")):
                raise FetchFailed(f"Slack answered {response.status} without a usable link")
            if not self._token_hosts.trusts(url):
                log.info("a Slack download is redirected to %s: followed without the token", host_of(url))
        raise FetchFailed("Slack redirected the download too many times")

    async def _url(self, file_id: str) -> tuple[str, str]:
        try:
            info = await self._client.files_info(file=file_id)
        except SlackApiError as error:
            code = str(error.response.get("error", ""))
            raise FetchFailed(FILES_INFO_ERRORS.get(code, f"Slack said {code}")) from None
        known = self._remember(info.get("file") or {})
        if known is None:
            raise FetchFailed("Slack gave no download link for it")
        return known

    def _remember(self, file: dict[str, Any]) -> tuple[str, str] | None:
        file_id = str(file.get("id") or "")
        url = str(file.get("url_private_download") or file.get("url_private") or "")
        if not file_id or not url:
            return None
        known = self._urls[file_id] = (url, str(file.get("mimetype") or ""))
        return known


async def _body(response: aiohttp.ClientResponse, mime: str, limit: int) -> bytes:
    """The file's bytes from Slack's answer, or FetchFailed saying why not."""
    if response.status == 404:
        raise FetchFailed("it was deleted")
    if response.status in (401, 403):
        raise FetchFailed("Slack refused the download")
    if response.status != 200:
        raise FetchFailed(f"Slack answered {response.status}")
    if response.content_type == "text/html" and "html" not in mime:
        # Slack's sign-in page: the token was not taken (a missing files:read scope).
        raise FetchFailed("Slack refused the download (does the app have files:read?)")
    if (response.content_length or 0) > limit:
        raise FetchFailed(f"it is over {limit:,} bytes")
    data = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK):
        data += chunk
        if len(data) > limit:
            raise FetchFailed(f"it is over {limit:,} bytes")
    return bytes(data)
