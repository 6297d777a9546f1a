"""Article 1 with asyncio and aiohttp: one session, every call a coroutine, at most 200 in
flight (the connector's limit; aiohttp's default is 100)."""

import asyncio

import aiohttp

from common import Timer, auth, describe, parse_args, report_items


async def get_item(session, url, item_id):
    async with session.get(f"{url}/api/items/{item_id}") as response:
        response.raise_for_status()
        return await response.json()


async def get_items(url, ids, in_flight):
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(headers=auth(), connector=connector) as session:
        return await asyncio.gather(*(get_item(session, url, i) for i in ids))


if __name__ == "__main__":
    args = parse_args(__doc__, workers=200)
    results, error = None, None
    with Timer() as timer:
        try:
            results = asyncio.run(get_items(args.url, range(1, args.jobs + 1), args.workers))
        except Exception as e:
            error = describe(e)
    report_items(f"asyncio + aiohttp, {args.workers} in flight", args, timer, results, error)
